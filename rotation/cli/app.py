"""The ``keyturn`` group: global error handling and the subcommands."""

from __future__ import annotations

import sys

import click

from rotation.cli.common import OpsGroup
from rotation.errors import KeyturnError

#: Exit statuses: 1 = an operation failed, 2 = bad usage or configuration, 3 = not found.
EXIT_FAILED = 1
EXIT_NOT_FOUND = 3


class KeyturnGroup(OpsGroup):
    """Turns every Keyturn error into one clear line on stderr and a meaningful exit status."""

    def invoke(self, ctx: click.Context) -> object:
        from rotation.errors import (
            ConfigurationError,
            InvalidSecretName,
            InvalidSecretValue,
            SecretNotFound,
        )

        try:
            return super().invoke(ctx)
        except SecretNotFound as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(EXIT_NOT_FOUND)
        except (ConfigurationError, InvalidSecretName, InvalidSecretValue) as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(2)
        except KeyturnError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(EXIT_FAILED)


@click.group(cls=KeyturnGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="keyturn")
def main() -> None:
    """Keyturn: secrets behind one interface, rotated on schedule with zero downtime."""


def _register() -> None:
    from rotation.cli import audit, db, demo, migrate, policies, run

    main.add_command(migrate.migrate_env_command)
    main.add_command(demo.demo_command)
    main.add_command(policies.policies_group)
    main.add_command(db.db_group)
    main.add_command(run.run_command)
    main.add_command(audit.audit_group)
    from rotation.cli import keys, plan, resolve, rotate, runs, secrets, status

    main.add_command(keys.keys_group)

    main.add_command(status.status_command)
    main.add_command(rotate.rotate_command)
    main.add_command(rotate.rotate_all_command)
    main.add_command(rotate.rollback_command)
    main.add_command(resolve.resolve_command)
    main.add_command(runs.runs_command)
    main.add_command(runs.history_command)
    main.add_command(plan.plan_command)
    main.add_command(secrets.secrets_group)
    from rotation.cli.dashboard import dashboard_command
    from rotation.cli.doctor import doctor_command
    from rotation.cli.metrics import metrics_command

    main.add_command(metrics_command)
    main.add_command(dashboard_command)
    main.add_command(doctor_command)


_register()
