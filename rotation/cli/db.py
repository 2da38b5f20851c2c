"""``keyturn db``: the ledger's schema."""

from __future__ import annotations

import click

from rotation.ledger.db import database_url


@click.group("db")
def db_group() -> None:
    """The ledger database (KEYTURN_DATABASE_URL)."""


@click.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def upgrade_command(revision: str) -> None:
    """Apply migrations up to REVISION."""
    from rotation.ledger.migrate import upgrade

    url = database_url()
    upgrade(url, revision)
    click.echo(f"ledger at {url.split('@')[-1]} is at {revision}")


db_group.add_command(upgrade_command)
