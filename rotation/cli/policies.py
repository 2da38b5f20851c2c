"""``keyturn policies``: check rotation policy files."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from rotation.durations import format_duration
from rotation.policy import Policy, PolicySet, default_schedules_dir, load_policies


@click.group("policies")
def policies_group() -> None:
    """Rotation policies (schedules/*.yaml)."""


@policies_group.command("check")
@click.argument("path", required=False, type=click.Path(path_type=Path))
def check_command(path: Path | None) -> None:
    """Validate policy files in PATH, a file or directory (default $KEYTURN_SCHEDULES, ./schedules).

    Prints each error as file:line: field: message. Exit status 0 when every policy is valid,
    1 when any error was found, 2 when PATH does not exist.
    """
    target = path if path is not None else default_schedules_dir()
    if not target.exists():
        click.echo(f"error: no such file or directory: {target}", err=True)
        sys.exit(2)
    result = load_policies(target)
    for error in result.errors:
        click.echo(str(error))
    if result.errors:
        bad_files = len({e.file for e in result.errors})
        click.echo(
            f"{_count(len(result.errors), 'error')} in {_count(bad_files, 'file')} "
            f"({_count(len(result.policies), 'valid policy', 'valid policies')} "
            f"in {_count(len(result.files) - bad_files, 'other file')})"
        )
        sys.exit(1)
    if result.policies:
        console = Console(highlight=False)
        if not console.is_terminal:
            console.width = 160  # CI logs do not wrap: keep rows whole rather than 80 wide
        console.print(_table(result))
    click.echo(
        f"{_count(len(result.policies), 'policy', 'policies')} OK "
        f"({_count(len(result.files), 'file')} in {target})"
    )


def _table(result: PolicySet) -> Table:
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("name", "secrets", "kind", "schedule", "window", "provider"):
        table.add_column(column, overflow="fold")
    for policy in result.policies:
        table.add_row(*(Text(cell) for cell in _row(policy)))
    return table


def _row(policy: Policy) -> tuple[str, ...]:
    schedule = policy.schedule.describe()
    if policy.jitter:
        schedule += f" (jitter {format_duration(policy.jitter)})"
    return (
        policy.name + (" (paused)" if policy.paused else ""),
        ", ".join(policy.patterns),
        policy.kind,
        schedule,
        policy.window.describe() if policy.window else "any time",
        policy.provider or "default",
    )


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else plural or singular + 's'}"
