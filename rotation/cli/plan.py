"""``keyturn plan``: the rotations ahead, per day, with collisions and days over budget."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from rotation.cli.common import OpsCommand, echo_json, fmt_age, fmt_time, make_console, open_runtime
from rotation.config import EngineSettings, Settings
from rotation.durations import format_duration, parse_duration
from rotation.errors import KeyturnError
from rotation.ops.forecast import (
    COLLISION_GAP,
    DEFAULT_BUDGET,
    MAX_PER_SECRET,
    Forecast,
    Scheduled,
    forecast,
)
from rotation.ops.overview import scheduled_secrets
from rotation.policy import Policy, default_schedules_dir, load_policies

#: Collisions and days listed before "... and N more" (``--json`` has them all).
SHOWN = 20


def _budget_default() -> int:
    return EngineSettings.from_env().daily_budget


def from_ledger() -> tuple[list[Scheduled], datetime]:
    """Every schedule in the ledger with its policy (rotation/ops/overview.py)."""
    with open_runtime() as runtime:
        return scheduled_secrets(runtime), runtime.clock()


def from_files(path: Path, console: Console) -> tuple[list[Scheduled], datetime]:
    """Every secret named in the policy files, never rotated (so due now). A glob counts as one
    secret named by the pattern: the files alone cannot say what it matches."""
    loaded = load_policies(path)
    for error in loaded.errors:
        console.print(f"[yellow]skipped: {escape(str(error))}[/]")
    default = Settings.from_env().provider
    items = []
    globs = []
    for policy in loaded.policies:
        for pattern in policy.patterns:
            if Policy.is_glob(pattern):
                globs.append(pattern)
            items.append(Scheduled(pattern, policy, policy.provider or default))
    if globs:
        console.print(
            f"[dim]globs counted as one secret each: {escape(', '.join(globs))} "
            "(without --from-files the ledger knows what they match)[/]"
        )
    return items, datetime.now(UTC)


@click.command("plan", cls=OpsCommand)
@click.option("--days", default=90, show_default=True, type=click.IntRange(1, 3650))
@click.option(
    "--budget",
    type=click.IntRange(min=1),
    help=f"Most rotations a day may have (default: KEYTURN_DAILY_BUDGET or {DEFAULT_BUDGET}).",
)
@click.option(
    "--gap",
    default=format_duration(COLLISION_GAP),
    show_default=True,
    metavar="DURATION",
    help="Rotations of two secrets on one backend closer than this collide.",
)
@click.option(
    "--from-files",
    "files",
    is_flag=True,
    help="Forecast from the policy files alone (no ledger): every secret is due now.",
)
@click.option(
    "--schedules",
    type=click.Path(path_type=Path),
    help="Policy file or directory for --from-files (default $KEYTURN_SCHEDULES, ./schedules).",
)
@click.option("--strict", is_flag=True, help="Exit 2 when anything is flagged.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole forecast as JSON.")
def plan_command(
    days: int,
    budget: int | None,
    gap: str,
    files: bool,
    schedules: Path | None,
    strict: bool,
    as_json: bool,
) -> None:
    """Forecast the rotations of the next DAYS days, per day, across every policy and backend.

    Flags collisions (rotations of different secrets on one backend within --gap of each
    other: Vault issue #18738, two roles meant to rotate months apart rotated seconds apart)
    and days with more rotations than the budget. Exit status 0; with --strict, 2 when
    anything is flagged.

    \b
    Examples:
      keyturn plan
      keyturn plan --days 365 --budget 20 --strict
      keyturn plan --from-files --schedules schedules/   # before the first deploy
    """
    try:
        gap_delta = parse_duration(gap)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--gap") from None
    limit = budget if budget is not None else _budget_default()
    notes = make_console(stderr=True)
    if files:
        items, now = from_files(schedules or default_schedules_dir(), notes)
    else:
        items, now = from_ledger()
    try:
        result = forecast(items, now, days, budget=limit, gap=gap_delta)
    except (ValueError, OverflowError) as exc:
        raise KeyturnError(f"cannot forecast: {exc}") from None
    if as_json:
        echo_json(_as_dict(result))
    else:
        _print(make_console(), result, days)
    if strict and result.flagged:
        sys.exit(2)


def _as_dict(result: Forecast) -> dict[str, Any]:
    return {
        "start": result.start,
        "end": result.end,
        "budget": result.budget,
        "days": [
            {
                "day": load.day.isoformat(),
                "rotations": len(load.rotations),
                "by_provider": load.by_provider,
                "over_budget": load.over_budget,
                "collisions": load.collisions,
            }
            for load in result.days()
        ],
        "rotations": [
            {
                "at": r.at,
                "secret": r.secret,
                "policy": r.policy,
                "provider": r.provider,
                "renews_expiry_at": r.renews,
            }
            for r in result.rotations
        ],
        "collisions": [
            {
                "provider": c.provider,
                "start": c.start,
                "span_seconds": int(c.span.total_seconds()),
                "secrets": list(c.secrets),
            }
            for c in result.collisions
        ],
        "truncated": result.truncated,
    }


def _print(console: Console, result: Forecast, days: int) -> None:
    loads = result.days()
    secrets = len({r.secret for r in result.rotations})
    console.print(
        f"[bold]{len(result.rotations)} rotations of {secrets} secrets[/] in the next {days} days "
        f"({fmt_time(result.start)} to {fmt_time(result.end)} UTC, budget {result.budget}/day)"
    )
    if not loads:
        return
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("day", "rotations", "backends", "secrets", "flags"):
        table.add_column(column, overflow="fold")
    for load in loads:
        names = list(dict.fromkeys(r.secret for r in load.rotations))
        shown = ", ".join(names[:4]) + (f" +{len(names) - 4} more" if len(names) > 4 else "")
        flags = []
        if load.over_budget:
            flags.append("over budget")
        if load.collisions:
            flags.append(f"{load.collisions} collision{'s' if load.collisions > 1 else ''}")
        table.add_row(
            f"{load.day:%Y-%m-%d %a}",
            Text(str(len(load.rotations)), style="bold red" if load.over_budget else ""),
            ", ".join(f"{p} {n}" for p, n in load.by_provider.items()),
            Text(shown),
            Text(", ".join(flags), style="bold red" if flags else ""),
        )
    console.print(table)
    _print_renewals(console, result)
    _print_flags(console, result)


def _print_renewals(console: Console, result: Forecast) -> None:
    """Each secret's first renewal ahead of its credential's expiry (certificates)."""
    first: dict[str, tuple[datetime, datetime]] = {}
    for rotation in result.rotations:
        if rotation.renews is not None and rotation.secret not in first:
            first[rotation.secret] = (rotation.at, rotation.renews)
    shown = sorted(first.items(), key=lambda item: item[1][0])
    for secret, (at, expires) in shown[:SHOWN]:
        console.print(
            f"renewal {fmt_time(at)}: {escape(secret)} (current certificate expires "
            f"{fmt_time(expires)}, {fmt_age(expires - at)} later)"
        )
    if len(shown) > SHOWN:
        console.print(f"... and {len(shown) - SHOWN} more renewals (see --json)")


def _print_flags(console: Console, result: Forecast) -> None:
    for collision in result.collisions[:SHOWN]:
        span = (
            f"within {fmt_age(collision.span)}"
            if collision.span >= timedelta(seconds=1)
            else "at the same moment"
        )
        console.print(
            f"[red]collision[/] {fmt_time(collision.start)} on {collision.provider}: "
            f"{escape(', '.join(collision.secrets))} {span}"
        )
    if len(result.collisions) > SHOWN:
        console.print(f"... and {len(result.collisions) - SHOWN} more collisions (see --json)")
    for load in result.over_budget[:SHOWN]:
        console.print(
            f"[red]over budget[/] {load.day:%Y-%m-%d}: {len(load.rotations)} rotations "
            f"(budget {result.budget})"
        )
    if result.truncated:
        console.print(
            f"[yellow]stopped counting after {MAX_PER_SECRET} rotations of: "
            f"{escape(', '.join(result.truncated))}[/]"
        )
    if not result.flagged:
        console.print("[green]no collisions, no day over budget[/]")
