"""Following many runs at once (``keyturn rotate-all --wait``): counts by state, a bar, an ETA.

Reads the ledger only, by run id (a few indexed queries a second, whatever else runs); the
workers do the work. On a terminal a rich progress bar redraws; elsewhere (a CI log, a pipe) a
line of counts is printed every ``report_every`` seconds and at the end.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import select

from rotation.durations import format_duration
from rotation.ledger.models import Run
from rotation.run.runtime import Runtime
from rotation.run.states import FINAL_STATES, RunState

__all__ = [
    "BUCKETS",
    "MassProgress",
    "RunStatus",
    "bucket",
    "follow_runs",
    "read_runs",
]

#: What the counts show, in order.
BUCKETS = ("pending", "running", "succeeded", "needs_attention", "failed")
#: Run ids read per query (a mass rotation may follow 10,000 runs).
_CHUNK = 1000
_STYLE = {
    "pending": "white",
    "running": "cyan",
    "succeeded": "green",
    "needs_attention": "red",
    "failed": "yellow",
}


@dataclass(frozen=True)
class RunStatus:
    """What the progress needs of one run."""

    run_id: int
    secret: str
    state: str
    last_error: str | None
    next_attempt_at: datetime | None


def bucket(state: str) -> str:
    """A run's bucket: pending (not begun), running (any step under way), or its end."""
    run_state = RunState(state)
    if run_state in FINAL_STATES:
        return run_state.value
    return "pending" if run_state is RunState.PENDING else "running"


def read_runs(runtime: Runtime, run_ids: Sequence[int]) -> list[RunStatus]:
    """The runs ``run_ids`` as the ledger has them now."""
    found: list[RunStatus] = []
    with runtime.ledger.sessions() as session:
        for start in range(0, len(run_ids), _CHUNK):
            chunk = list(run_ids[start : start + _CHUNK])
            rows = session.execute(
                select(Run.id, Run.secret, Run.state, Run.last_error, Run.next_attempt_at).where(
                    Run.id.in_(chunk)
                )
            ).all()
            found.extend(RunStatus(*row) for row in rows)
    return sorted(found, key=lambda status: status.run_id)


@dataclass
class MassProgress:
    """Counts by bucket and an ETA from the rate at which runs have ended since we started."""

    total: int
    started: float = field(default_factory=time.monotonic)
    counts: Counter[str] = field(default_factory=Counter)
    #: Runs already ended when we started following: not part of the rate.
    _ended_at_start: int | None = None
    clock: Callable[[], float] = time.monotonic

    def update(self, statuses: Sequence[RunStatus]) -> None:
        self.counts = Counter(bucket(status.state) for status in statuses)
        if self._ended_at_start is None:
            self._ended_at_start = self.ended

    @property
    def ended(self) -> int:
        return sum(self.counts[name] for name in ("succeeded", "needs_attention", "failed"))

    def eta(self) -> timedelta | None:
        """Time left at the rate seen so far; None until a run has ended while we watched."""
        done = self.ended - (self._ended_at_start or 0)
        left = self.total - self.ended
        elapsed = self.clock() - self.started
        if left <= 0:
            return timedelta(0)
        if done <= 0 or elapsed <= 0:
            return None
        return timedelta(seconds=round(elapsed / done * left))

    def summary(self, markup: bool = True) -> str:
        parts = []
        for name in BUCKETS:
            text = f"{name} {self.counts[name]}"
            parts.append(f"[{_STYLE[name]}]{text}[/]" if markup and self.counts[name] else text)
        eta = self.eta()
        parts.append(f"ETA {format_duration(eta) if eta is not None else '?'}")
        return ", ".join(parts)


def _progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    )


def _polls(interval: float, deadline: float) -> Iterator[None]:
    while True:
        yield
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


def follow_runs(
    runtime: Runtime,
    console: Console,
    run_ids: Sequence[int],
    *,
    timeout: float,
    wait: bool = True,
    interval: float = 1.0,
    report_every: float = 10.0,
    again: str = "the same command with --wait",
) -> int:
    """Show the runs' progress until they have all ended (``wait``) or once; the exit status:
    0 when every run succeeded, 1 otherwise (the runs that did not are listed)."""
    ids = sorted(set(run_ids))
    mass = MassProgress(total=len(ids))
    deadline = time.monotonic() + (timeout if wait else 0.0)
    statuses: list[RunStatus] = []
    last_report = 0.0
    with _progress_bar(console) as bar:
        task = bar.add_task(f"{len(ids)} runs", total=len(ids), counts="")
        for _ in _polls(interval, deadline):
            statuses = read_runs(runtime, ids)
            mass.update(statuses)
            bar.update(task, completed=mass.ended, counts=mass.summary())
            if mass.ended >= mass.total:
                break
            if not console.is_terminal and time.monotonic() - last_report >= report_every:
                console.print(mass.summary(markup=False))
                last_report = time.monotonic()
    if not console.is_terminal or not wait:
        console.print(mass.summary(markup=False))
    if not wait:
        console.print(f"the workers go on; follow them with {again}, or `keyturn runs`")
        return 0 if mass.counts["succeeded"] == mass.total else 1
    return _verdict(console, mass, statuses, timeout)


def _verdict(
    console: Console, mass: MassProgress, statuses: Sequence[RunStatus], timeout: float
) -> int:
    if mass.counts["succeeded"] == mass.total:
        console.print(f"[green]all {mass.total} runs succeeded[/]")
        return 0
    others = [status for status in statuses if status.state != RunState.SUCCEEDED.value]
    console.print(
        f"[red]{len(others)} of {mass.total} runs did not succeed[/]"
        + (
            f" ({mass.total - mass.ended} still open after "
            f"{format_duration(timedelta(seconds=int(timeout)))}; they go on without us)"
            if mass.ended < mass.total
            else ""
        )
        + ":"
    )
    for status in others:
        detail = status.last_error or ""
        if status.next_attempt_at is not None and RunState(status.state) not in FINAL_STATES:
            detail = f"waiting until {status.next_attempt_at:%H:%M:%S}; {detail}".rstrip("; ")
        console.print(
            f"  run {status.run_id}  {escape(status.secret)}  {status.state}"
            + (f"  {escape(detail[:200])}" if detail else ""),
            soft_wrap=True,
        )
    console.print("see `keyturn history NAME`; `keyturn resolve` for those needing attention")
    return 1
