"""``keyturn status``: every scheduled secret at a glance; exit status 2 when one needs a human."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta

import click
from rich import box
from rich.table import Table
from rich.text import Text

from rotation.cli.common import (
    OpsCommand,
    echo_json,
    fmt_age,
    fmt_relative,
    fmt_time,
    make_console,
    open_runtime,
)
from rotation.durations import parse_duration
from rotation.ops.operations import StatusRow, Thresholds, status_rows

#: Exit status when a secret is overdue, stalled or needs attention (for cron and monitoring).
EXIT_ATTENTION = 2

STATE_STYLE = {
    "idle": "dim",
    "succeeded": "green",
    "failed": "red",
    "needs_attention": "bold red",
}


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> timedelta | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("status", cls=OpsCommand)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as a JSON list.")
@click.option(
    "--tolerance",
    callback=_duration,
    metavar="DURATION",
    help="How late a due rotation may start before it is overdue "
    "(default: 2 x KEYTURN_TICK_SECONDS + 5m).",
)
def status_command(as_json: bool, tolerance: timedelta | None) -> None:
    """Every scheduled secret: policy, last rotation, next due time, latest run, age.

    Exit status 0 when all is well, 2 when a secret is overdue (due longer ago than the
    tolerance and no run started), its run is stalled (no progress since its lease and the
    redelivery delay passed), or its run needs attention. Times are UTC.

    \b
    Examples:
      keyturn status
      keyturn status --json | jq '.[] | select(.problem)'
      keyturn status >/dev/null || page-oncall "keyturn: rotations need attention"
    """
    thresholds = Thresholds.from_env(tolerance=tolerance)
    with open_runtime() as runtime:
        now = runtime.clock()
        rows = status_rows(runtime, now, thresholds)
    problems = [r for r in rows if r.problem]
    if as_json:
        echo_json([_as_dict(row, now) for row in rows])
    elif not rows:
        click.echo("No scheduled secrets yet: add policies to schedules/*.yaml and start beat.")
    else:
        console = make_console()
        console.print(_table(rows, now))
        summary = f"{len(rows)} secret{'s' if len(rows) != 1 else ''}"
        if problems:
            console.print(f"{summary}, [bold red]{len(problems)} need attention[/]")
        else:
            console.print(f"{summary}, all on schedule")
    if problems:
        sys.exit(EXIT_ATTENTION)


def note(row: StatusRow, now: datetime) -> str:
    """Why a row needs attention, or what it is doing."""
    if row.problem == "needs_attention":
        return f"run {row.run_id} needs attention: {row.last_error or 'no error recorded'}"
    if row.problem == "stalled":
        return f"run {row.run_id} stalled in {row.state} for {fmt_age(row.late)}"
    if row.problem == "overdue":
        if row.late is None:
            return "no next due time and no active run"
        return f"overdue by {fmt_age(row.late)}"
    if row.active:
        if row.waiting_until is not None and row.waiting_until > now:
            return f"run {row.run_id} waiting until {fmt_time(row.waiting_until)}"
        return f"run {row.run_id} in progress"
    if row.paused:
        return "policy paused"
    if row.state == "failed":
        return f"run {row.run_id} failed: {row.last_error or 'no error recorded'}"
    return ""


def _as_dict(row: StatusRow, now: datetime) -> dict[str, object]:
    return {
        "secret": row.secret,
        "provider": row.provider,
        "policy": row.policy,
        "paused": row.paused,
        "last_rotated_at": _iso(row.last_rotated_at),
        "next_due_at": _iso(row.next_due_at),
        "state": row.state,
        "run_id": row.run_id,
        "age_seconds": int(row.age.total_seconds()) if row.age is not None else None,
        "problem": row.problem,
        "note": note(row, now),
        "expires_at": _iso(row.expires_at),
        "expires_in_days": _days(row.expires_at, now),
    }


def _days(at: datetime | None, now: datetime) -> float | None:
    """Days until ``at`` (negative once past), to one decimal."""
    return round((at - now).total_seconds() / 86400, 1) if at is not None else None


def fmt_expiry(at: datetime | None, now: datetime) -> str:
    """``in 23 days`` / ``EXPIRED 2 days ago`` / ``-``."""
    if at is None:
        return "-"
    days = (at - now).total_seconds() / 86400
    if days < 0:
        return f"EXPIRED {fmt_age(now - at)} ago"
    return f"{fmt_time(at)} ({days:.0f} days)" if days >= 1 else f"{fmt_time(at)} (<1 day)"


def _iso(at: datetime | None) -> str | None:
    return at.isoformat().replace("+00:00", "Z") if at is not None else None


def _table(rows: list[StatusRow], now: datetime) -> Table:
    table = Table(box=box.SIMPLE_HEAD, caption=f"times in UTC, now {fmt_time(now)}")
    for column in ("secret", "provider", "policy", "last rotated", "next due", "state", "age"):
        table.add_column(column, overflow="fold")
    expiring = any(row.expires_at is not None for row in rows)
    if expiring:  # only where a kind's credentials expire (certificates)
        table.add_column("expires", overflow="fold")
    table.add_column("note", overflow="fold", max_width=60)
    for row in rows:
        if row.next_due_at is not None:
            due = f"{fmt_time(row.next_due_at)} ({fmt_relative(row.next_due_at, now)})"
        else:
            due = "held by run" if row.active else "-"
        problem_style = "bold red" if row.problem else ""
        cells = [
            Text(row.secret, style=problem_style),
            Text(row.provider),
            Text(row.policy + (" (paused)" if row.paused else "")),
            Text(fmt_time(row.last_rotated_at, "never")),
            Text(due),
            Text(row.state, style=STATE_STYLE.get(row.state, "yellow")),
            Text(fmt_age(row.age)),
        ]
        if expiring:
            soon = row.expires_at is not None and row.expires_at - now < timedelta(days=14)
            cells.append(Text(fmt_expiry(row.expires_at, now), style="bold red" if soon else ""))
        cells.append(Text(note(row, now), style=problem_style))
        table.add_row(*cells)
    return table
