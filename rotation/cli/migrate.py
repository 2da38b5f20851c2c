"""``keyturn migrate-env``: move secrets out of environment variables."""

from __future__ import annotations

import os

import click

from rotation.client.manager import get_secrets_manager
from rotation.client.migrate_env import DEFAULT_MAPPING, load_mapping, migrate_env, plan_migration


@click.command("migrate-env")
@click.option(
    "--mapping",
    "mapping_file",
    type=click.Path(exists=True, dir_okay=False),
    help="YAML file of ENV_VAR: secret_name pairs (default: the built-in mapping, see the README).",
)
@click.option("--dry-run", is_flag=True, help="Show what would move; write nothing.")
def migrate_env_command(mapping_file: str | None, dry_run: bool) -> None:
    """Store environment variables as secrets. Prints names, never values."""
    mapping = load_mapping(mapping_file) if mapping_file else DEFAULT_MAPPING
    if dry_run:
        plan = plan_migration(mapping, os.environ)
    else:
        plan = migrate_env(get_secrets_manager(), mapping, os.environ)
    verb = "Would migrate" if dry_run else "Migrated"
    moved = 0
    for step in plan:
        if step.present:
            moved += 1
            click.echo(f"{verb} {step.env_var} -> {step.secret_name}")
        else:
            click.echo(f"Skipped {step.env_var} (not set)")
    if dry_run:
        click.echo(f"Dry run: {moved} of {len(plan)} variables would move; nothing was written.")
    else:
        click.echo(
            f"Migration complete: {moved} of {len(plan)} variables moved. "
            "Remove them from your .env file."
        )
