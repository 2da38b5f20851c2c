"""``keyturn rotate``, ``rotate-all`` and ``rollback``: manual rotations and their undo."""

from __future__ import annotations

import shlex
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rotation.cli import tasks
from rotation.cli.common import OpsCommand, fmt_time, make_console, open_runtime
from rotation.cli.progress import follow_runs
from rotation.durations import format_duration, parse_duration
from rotation.ledger.models import Run, RunEvent
from rotation.names import validate_name
from rotation.ops.operations import get_run, matching_secrets, run_events
from rotation.run.runtime import Runtime
from rotation.run.states import FINAL_STATES, NEXT_STATE, RunState
from rotation.run.steps import FAILED_RETRY_DELAY

#: Steps a run takes from pending to succeeded.
TOTAL_STEPS = len(NEXT_STATE)
_ORDER = [RunState.PENDING, *NEXT_STATE.values()]
OUTCOME_STYLE = {
    "ok": "green",
    "wait": "yellow",
    "retry": "yellow",
    "throttled": "yellow",
    "failed": "red",
}


def steps_done(state: str) -> int:
    """How many of the 7 steps a run in ``state`` has done (failed runs: where they stopped)."""
    try:
        return _ORDER.index(RunState(state))
    except ValueError:
        return 0


def _started(console: Console, run: dict[str, Any]) -> None:
    name = escape(str(run["secret"]))
    if run["created"]:
        console.print(f"started run {run['run_id']} for {name} ({run['state']})")
    elif run["state"] == RunState.SUCCEEDED.value:
        console.print(f"{name} was rotated since then: run {run['run_id']}; skipped")
    else:
        console.print(
            f"{name} is already being rotated: run {run['run_id']} ({run['state']}); "
            "not starting another"
        )


@click.command("rotate", cls=OpsCommand)
@click.argument("name")
@click.option("--wait", is_flag=True, help="Follow the run until it ends; exit 0 on success.")
@click.option(
    "--timeout",
    default=600.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds --wait waits at most.",
)
def rotate_command(name: str, wait: bool, timeout: float) -> None:
    """Rotate secret NAME now, through its policy (create, apply, test, promote, ...).

    Starts a run unless one is already active (then shows that one). The workers do the
    steps; --wait follows them from the ledger. With --wait the exit status is 0 when the run
    succeeded, 1 when it failed, needs attention or is still running after --timeout.

    \b
    Examples:
      keyturn rotate api_key_ncbi
      keyturn rotate db_credentials --wait --timeout 900
    """
    validate_name(name)
    console = make_console()
    with open_runtime() as runtime:
        answer = tasks.request("rotate", {"secret": name}, runtime.clock())
        (run,) = answer["runs"]
        _started(console, run)
        if wait:
            sys.exit(follow(runtime, console, int(run["run_id"]), timeout))


@click.command("rotate-all", cls=OpsCommand)
@click.argument("pattern")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--wait", is_flag=True, help="Follow the runs to their end; exit 0 if all succeeded.")
@click.option(
    "--timeout",
    default=6 * 3600.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds --wait waits at most.",
)
@click.option(
    "--since",
    metavar="TIME|DURATION",
    help="Skip secrets a run started at or after this rotated successfully (UTC ISO time, or a "
    "duration ago such as 15m): repeating a mass rotation starts nothing twice.",
)
def rotate_all_command(
    pattern: str, yes: bool, wait: bool, timeout: float, since: str | None
) -> None:
    """Rotate every scheduled secret containing PATTERN (or matching it as a glob).

    Lists the matching secrets and asks before starting; secrets already being rotated keep
    their active run, and with --since those a run started since then rotated are skipped
    (so repeating the command, or following it again with --wait, starts nothing twice). Then
    shows the runs' progress: counts by state (pending, running, succeeded, needs_attention,
    failed) and an ETA. --wait follows them to the end: exit 0 when every run succeeded, 1
    otherwise, listing the runs that did not. Breach response: docs/operations.md.

    \b
    Examples:
      keyturn rotate-all api_key            # every secret whose name contains api_key
      keyturn rotate-all 'prod/*' --yes
      keyturn rotate-all '*' --yes --wait   # after a breach
      keyturn rotate-all '*' --yes --wait --since 2026-05-04T09:00:00Z   # again: joins it
    """
    console = make_console()
    with open_runtime() as runtime:
        started_at = runtime.clock()
        skip_after = _since(since, started_at) if since else None
        names = matching_secrets(runtime, pattern)
        if not names:
            click.echo(
                f"error: no scheduled secret matches {pattern!r} (see `keyturn status`)", err=True
            )
            sys.exit(3)
        console.print(f"{len(names)} secret{'s' if len(names) != 1 else ''} match {pattern!r}:")
        for name in names:
            console.print(f"  {escape(name)}")
        if not yes:
            click.confirm(f"Rotate {len(names)} secrets now?", abort=True)
        run_ids = []
        # the workers tell a run that succeeded since then from one to start, per secret
        args = {"pattern": pattern, "since": skip_after.isoformat() if skip_after else None}
        for run in tasks.request("rotate_all", args, runtime.clock())["runs"]:
            _started(console, run)
            run_ids.append(int(run["run_id"]))
        again = (
            f"`keyturn rotate-all {shlex.quote(pattern)} --yes --wait "
            f"--since {(skip_after or started_at):%Y-%m-%dT%H:%M:%SZ}` (it starts nothing twice)"
        )
        status = follow_runs(runtime, console, run_ids, timeout=timeout, wait=wait, again=again)
        if wait:
            sys.exit(status)


def _since(value: str, now: datetime) -> datetime:
    """``--since``: a UTC ISO time, or a duration before ``now``."""
    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    try:
        at = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither a time (2026-05-04T09:00:00Z) nor a duration (15m)",
            param_hint="--since",
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


@click.command("rollback", cls=OpsCommand)
@click.argument("name")
@click.option(
    "--retry-after",
    default=format_duration(FAILED_RETRY_DELAY),
    show_default=True,
    metavar="DURATION",
    help="When the schedule tries NAME again (e.g. 1h, 7d).",
)
def rollback_command(name: str, retry_after: str) -> None:
    """Make the previous version of NAME current again, undoing its rotation in progress.

    Possible while the rotation has promoted the new value and not yet started retiring the
    old one (state promoted, or restarted during the retire grace): the old credential is
    still valid. The workers make it current again, announce that through the policy's
    restart strategy (consumers move back) and only then revoke the new credential; the run
    ends failed ("rolled back by <you>").

    \b
    Examples:
      keyturn rollback db_credentials
      keyturn rollback api_key_ncbi --retry-after 7d   # hold the next try for a week
    """
    validate_name(name)
    try:
        delay = parse_duration(retry_after)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--retry-after") from None
    console = make_console()
    args = {"secret": name, "retry_after_seconds": delay.total_seconds()}
    with open_runtime() as runtime:
        (done,) = tasks.request("rollback", args, runtime.clock())["runs"]
    console.print(
        f"rolling back {escape(name)}: run {done['run_id']} ({done['from_state']} -> "
        f"{done['state']}); {escape(str(done['note']))}; it ends failed and the schedule tries "
        f"{escape(name)} again {escape(retry_after)} later (pause its policy to hold it "
        f"longer); follow it with `keyturn history {escape(name)}`"
    )


# --- following a run ---------------------------------------------------------------------------


def describe_event(event: RunEvent) -> str:
    colour = OUTCOME_STYLE.get(event.outcome, "white")
    note = f"  {escape(event.message)}" if event.message else ""
    return (
        f"{event.at:%H:%M:%S}  {event.step:<8} {event.from_state} -> "
        f"[{colour}]{event.to_state}[/] ({event.outcome}){note}"
    )


def follow(runtime: Runtime, console: Console, run_id: int, timeout: float) -> int:
    """Print the run's events as they happen until it ends; the exit status for the command."""
    deadline = time.monotonic() + timeout
    last_event = 0
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    run = get_run(runtime, run_id)
    assert run is not None
    task = progress.add_task(f"run {run_id} {escape(run.secret)}", total=TOTAL_STEPS, detail="")
    with progress:
        while True:
            for event in run_events(runtime, [run_id], after=last_event):
                progress.console.print(describe_event(event), soft_wrap=True)
                last_event = event.id
            run = get_run(runtime, run_id)
            assert run is not None
            progress.update(task, completed=steps_done(run.state), detail=_detail(run))
            if RunState(run.state) in FINAL_STATES or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
    return _verdict(console, run, timeout)


def _detail(run: Run) -> str:
    if run.next_attempt_at is not None and RunState(run.state) not in FINAL_STATES:
        return f"{run.state}, waiting until {run.next_attempt_at:%H:%M:%S}"
    return run.state


def _verdict(console: Console, run: Run, timeout: float) -> int:
    state = RunState(run.state)
    if state is RunState.SUCCEEDED:
        console.print(f"[green]run {run.id} succeeded[/]: {escape(run.secret)} rotated")
        return 0
    if state in FINAL_STATES:
        console.print(
            f"[red]run {run.id} {state.value}[/]: {escape(run.last_error or 'no error recorded')}"
        )
        return 1
    waiting = f", waiting until {fmt_time(run.next_attempt_at)} UTC" if run.next_attempt_at else ""
    console.print(
        f"[yellow]run {run.id} is still {state.value}{waiting} after "
        f"{format_duration(timedelta(seconds=int(timeout)))}[/]; it goes on without us: "
        f"`keyturn history {escape(run.secret)}`"
    )
    return 1
