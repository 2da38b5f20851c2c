"""``keyturn runs`` and ``keyturn history``: what rotations did, from the ledger; never values."""

from __future__ import annotations

from typing import Any

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from rotation.cli.common import (
    OpsCommand,
    echo_json,
    fmt_age,
    fmt_time,
    make_console,
    open_runtime,
)
from rotation.cli.rotate import describe_event
from rotation.cli.status import STATE_STYLE
from rotation.client.manager import SecretsManager
from rotation.errors import SecretNotFound
from rotation.ledger.models import Run, RunEvent
from rotation.names import validate_name
from rotation.ops.operations import find_runs, provider_of, run_events
from rotation.run.states import RunState
from rotation.values import VersionInfo


def _run_dict(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "secret": run.secret,
        "policy": run.policy_name,
        "provider": run.provider,
        "state": run.state,
        "trigger": run.trigger,
        "actor": run.actor,
        "attempt": run.attempt,
        "from_version": run.from_version,
        "to_version": run.to_version,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "next_attempt_at": run.next_attempt_at,
        "last_error": run.last_error,
    }


def _event_dict(event: RunEvent) -> dict[str, Any]:
    return {
        "at": event.at,
        "step": event.step,
        "from_state": event.from_state,
        "to_state": event.to_state,
        "outcome": event.outcome,
        "attempt": event.attempt,
        "worker": event.worker,
        "message": event.message,
    }


@click.command("runs", cls=OpsCommand)
@click.option("--secret", metavar="NAME", help="Only runs of this secret.")
@click.option("--state", type=click.Choice([s.value for s in RunState]), help="Only runs in STATE.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Print the runs as a JSON list.")
def runs_command(secret: str | None, state: str | None, limit: int, as_json: bool) -> None:
    """Recent rotation runs, newest first.

    \b
    Examples:
      keyturn runs
      keyturn runs --state needs_attention
      keyturn runs --secret db_credentials --limit 5 --json
    """
    if secret is not None:
        validate_name(secret)
    with open_runtime() as runtime:
        runs = find_runs(runtime, secret=secret, state=state, limit=limit)
    if as_json:
        echo_json([_run_dict(run) for run in runs])
        return
    if not runs:
        click.echo("No runs match.")
        return
    table = Table(box=box.SIMPLE_HEAD, caption="times in UTC")
    for column in ("run", "secret", "state", "trigger", "actor", "try", "started", "took"):
        table.add_column(column, overflow="fold")
    table.add_column("last error", overflow="fold", max_width=50)
    for run in runs:
        took = run.finished_at - run.created_at if run.finished_at else None
        table.add_row(
            str(run.id),
            Text(run.secret),
            Text(run.state, style=STATE_STYLE.get(run.state, "yellow")),
            run.trigger,
            Text(run.actor),
            str(run.attempt),
            fmt_time(run.created_at),
            fmt_age(took, "running" if run.finished_at is None else "-"),
            Text(run.last_error or ""),
        )
    make_console().print(table)


@click.command("history", cls=OpsCommand)
@click.argument("name")
@click.option(
    "--limit",
    default=10,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="How many of the latest runs to show.",
)
@click.option("--json", "as_json", is_flag=True, help="Print versions and runs as JSON.")
def history_command(name: str, limit: int, as_json: bool) -> None:
    """The versions of secret NAME in its backend and its rotation runs with their events.

    Version ids, creation times and stages only: never values.

    \b
    Examples:
      keyturn history db_credentials
      keyturn history api_key_ncbi --limit 3 --json
    """
    validate_name(name)
    with open_runtime() as runtime:
        alias = provider_of(runtime, name)
        runs = list(reversed(find_runs(runtime, secret=name, limit=limit)))
        events = run_events(runtime, [run.id for run in runs])
        try:
            versions: list[VersionInfo] | None = SecretsManager(runtime.provider(alias)).versions(
                name
            )
        except SecretNotFound:
            if not runs:
                raise
            versions = None  # deleted since: the runs are still worth showing
    if as_json:
        echo_json(
            {
                "secret": name,
                "provider": alias,
                "versions": [v.to_dict() for v in versions] if versions is not None else None,
                "runs": [
                    {
                        **_run_dict(run),
                        "events": [_event_dict(e) for e in events if e.run_id == run.id],
                    }
                    for run in runs
                ],
            }
        )
        return
    console = make_console()
    _print_versions(console, name, alias, versions, runs)
    if not runs:
        console.print("no rotation runs yet")
    for run in runs:
        console.print(_run_header(run))
        for event in events:
            if event.run_id == run.id:
                console.print("  " + describe_event(event), soft_wrap=True)


def _print_versions(
    console: Console, name: str, alias: str, versions: list[VersionInfo] | None, runs: list[Run]
) -> None:
    if versions is None:
        console.print(f"{escape(name)} no longer exists in {alias}")
        return
    by_token = {run.token: run.id for run in runs}
    table = Table(title=f"{escape(name)} in {alias}", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("version", "created (UTC)", "stages", "run"):
        table.add_column(column, overflow="fold")
    for info in versions:
        run_id = by_token.get(info.token) if info.token else None
        table.add_row(
            Text(info.version_id),
            fmt_time(info.created),
            ", ".join(sorted(s.value for s in info.stages)) or "-",
            str(run_id) if run_id is not None else "",
        )
    console.print(table)


def _run_header(run: Run) -> str:
    colour = STATE_STYLE.get(run.state, "yellow")
    error = f": {escape(run.last_error)}" if run.last_error and run.state != "succeeded" else ""
    return (
        f"[bold]run {run.id}[/] {run.trigger} by {escape(run.actor)} at "
        f"{fmt_time(run.created_at)} UTC: [{colour}]{run.state}[/]{error}"
    )
