"""``keyturn keys generate NAME``: an operator's key pair for signing manual requests."""

from __future__ import annotations

from pathlib import Path

import click

from rotation.access.requests import generate_key_pair
from rotation.cli.common import OpsGroup


@click.group("keys", cls=OpsGroup)
def keys_group() -> None:
    """Operators' signing keys (manual requests are signed; see docs/audit-and-roles.md)."""


@keys_group.command("generate")
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    default=str(Path.home() / ".config" / "keyturn"),
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where to write NAME.key (mode 0600) and NAME.pub.",
)
def generate_command(name: str, directory: str) -> None:
    """Create an Ed25519 key pair for principal NAME: NAME.key (yours, never shared) and
    NAME.pub (for the workers' KEYTURN_OPERATOR_KEYS directory). Never overwrites a key.

    \b
    Examples:
      keyturn keys generate alice
      keyturn keys generate ci-bot --dir /etc/keyturn/ci
    """
    private, public = generate_key_pair(name, directory)
    click.echo(f"wrote {private} (private: keep it 0600, set KEYTURN_OPERATOR_KEY={private})")
    click.echo(
        f"wrote {public} (public: copy it into the workers' KEYTURN_OPERATOR_KEYS directory and "
        f"bind a role to {name!r} in KEYTURN_ROLES_FILE)"
    )
