"""The dispatcher's per-tick database work at 1k, 100k and 1,000,000 schedules.

Each size gets its own scratch Postgres ledger (migrated to head), filled in SQL
(``generate_series``, so a million rows take seconds): ``POLICIES`` glob policies, N schedules
spread over them (none due: next due within 30 days, a fixed function of the row number), and
N finished (succeeded) runs, one per secret, as a ledger that has rotated every secret once
holds; then VACUUM ANALYZE. One tick = ``Dispatcher.start_due_runs(now)`` +
``Dispatcher.recover_stalled(now)``, timed in-process (wall clock); policy file sync is left
out (it runs on file changes only). Before each tick the chosen schedules are made due; after
it, the runs it created are deleted, so every tick does the same work.

- equal due count: ``EQUAL_DUE`` due at every size, ``ROUNDS`` ticks per size, the sizes
  taken in turn (1k, 10k, 100k, then 10k, 100k, 1k, ...) so that load from other processes on
  a shared machine falls on every size alike;
- 1% due: 10 and 1000 due rows at 1k and 100k, ``BUSY_REPEATS`` ticks per size (not at 1M:
  10,000 runs a tick is a different bench).

Prints the median tick per size and due count. Target: at equal due count, the median over
rounds of tick(1M) / tick(1k), both ticks of the same round, <= 1.5 (the ratio of medians and
of mins are printed too). When missed (or with ``--explain``), EXPLAIN (ANALYZE, BUFFERS) of
every statement of one tick at 1M is printed. Exit status 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from _common import check, scratch_database
from sqlalchemy import bindparam, delete, event, insert, text, update
from sqlalchemy.engine import Connection, Engine

from rotation.ledger.db import Ledger
from rotation.ledger.models import PolicyRow, Run, Schedule
from rotation.policy import Policy
from rotation.run.runtime import Runtime
from rotation.scheduler.dispatcher import Dispatcher

TARGET = 1.5
SIZES = (1_000, 100_000, 1_000_000)
BUSY_MAX = 100_000  # the 1% due series stops here
EQUAL_DUE = 10
DUE_FRACTION = 0.01
POLICIES = 20
ROUNDS = 51  # ticks per size at the equal due count, sizes interleaved
BUSY_REPEATS = 7  # ticks per size at 1% due
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
OVERDUE = NOW - timedelta(minutes=1)
SPREAD = 30 * 86400 - 3600  # seconds over which next due times are spread


@dataclass(frozen=True)
class Series:
    total: int
    due: int
    ticks: list[float]  # seconds

    @property
    def median(self) -> float:
        return statistics.median(self.ticks)


def policy_specs() -> list[Policy]:
    return [
        Policy.model_validate(
            {
                "name": f"bench-{i:02d}",
                "secrets": [f"p{i:02d}/*"],
                "provider": "memory",
                "kind": "random",
                "schedule": {"every": "30d"},
                "retire_after": "1h",
            }
        )
        for i in range(POLICIES)
    ]


def secret_name(j: int) -> str:
    return f"p{j % POLICIES:02d}/key_{j:07d}"


def due_offset(j: int) -> int:
    """Seconds after NOW that secret ``j`` is due (the same formula as the SQL fill)."""
    return 3600 + (j * 7919) % SPREAD


_FILL = """
INSERT INTO schedules (secret, policy_name, next_due_at, last_rotated_at)
SELECT 'p' || lpad((j % {policies})::text, 2, '0') || '/key_' || lpad(j::text, 7, '0'),
       'bench-' || lpad((j % {policies})::text, 2, '0'),
       :now + make_interval(secs => 3600 + (j::bigint * 7919) % {spread}),
       :now + make_interval(secs => 3600 + (j::bigint * 7919) % {spread}) - interval '30 days'
FROM generate_series(0, :total - 1) AS j;
INSERT INTO runs (secret, policy_name, provider, trigger, actor, state, attempt, max_attempts,
                  token, created_at, updated_at, state_entered_at, finished_at)
SELECT secret, policy_name, 'memory', 'schedule', 'scheduler', 'succeeded', 0, 5,
       md5(secret), last_rotated_at - interval '5 minutes', last_rotated_at,
       last_rotated_at, last_rotated_at
FROM schedules;
"""


def populate(ledger: Ledger, total: int) -> None:
    """Policies, ``total`` schedules (none due) and one finished run per secret, in SQL."""
    with ledger.engine.begin() as conn:
        for table in ("run_events", "runs", "schedules", "policies"):
            conn.execute(text(f"TRUNCATE {table} CASCADE"))
        conn.execute(
            insert(PolicyRow),
            [
                {
                    "name": p.name,
                    "source": "bench",
                    "spec": p.to_spec(),
                    "spec_hash": p.spec_hash,
                    "paused": False,
                    "updated_at": NOW,
                }
                for p in policy_specs()
            ],
        )
        for statement in _FILL.format(policies=POLICIES, spread=SPREAD).split(";"):
            if statement.strip():
                conn.execute(text(statement), {"now": NOW, "total": total})
    with ledger.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))


def make_due(ledger: Ledger, names: list[str]) -> None:
    with ledger.engine.begin() as conn:
        conn.execute(update(Schedule).where(Schedule.secret.in_(names)).values(next_due_at=OVERDUE))


def restore(ledger: Ledger, names: list[str]) -> None:
    table = Schedule.__table__
    with ledger.engine.begin() as conn:
        conn.execute(
            update(table)
            .where(table.c.secret == bindparam("b_secret"))
            .values(next_due_at=bindparam("b_due")),
            [
                {"b_secret": n, "b_due": NOW + timedelta(seconds=due_offset(index(n)))}
                for n in names
            ],
        )


def index(name: str) -> int:
    return int(name.rsplit("_", 1)[1])


def sample(total: int, count: int, seed: int) -> list[str]:
    return [secret_name(j) for j in random.Random(seed).sample(range(total), count)]


def one_tick(dispatcher: Dispatcher) -> tuple[float, list[int], list[int]]:
    start = time.perf_counter()
    started = dispatcher.start_due_runs(NOW)
    recovered = dispatcher.recover_stalled(NOW)
    return time.perf_counter() - start, started, recovered


class Box:
    """One size: its own scratch ledger, runtime and dispatcher."""

    def __init__(self, total: int, url: str, empty: str) -> None:
        self.total = total
        self.ledger = Ledger(url)
        self.runtime = Runtime(
            self.ledger, environ={"SECRETS_PROVIDER": "memory"}, clock=lambda: NOW
        )
        self.dispatcher = Dispatcher(self.runtime, empty)
        started = time.perf_counter()
        populate(self.ledger, total)
        self.setup = time.perf_counter() - started

    def tick(self, names: list[str]) -> float:
        """Make ``names`` due, time one tick, then delete its runs (the rows stay claimed)."""
        make_due(self.ledger, names)
        seconds, started, recovered = one_tick(self.dispatcher)
        if len(started) != len(names) or recovered:
            raise RuntimeError(
                f"tick at {self.total}: started {len(started)} of {len(names)} due, "
                f"recovered {len(recovered)}"
            )
        with self.ledger.engine.begin() as conn:
            conn.execute(delete(Run).where(Run.id.in_(started)))
        return seconds

    def series(self, names: list[str], repeats: int) -> Series:
        self.tick(names)  # warm-up: policy parsing, statement caches
        ticks = [self.tick(names) for _ in range(repeats)]
        restore(self.ledger, names)
        return Series(self.total, len(names), ticks)

    def close(self) -> None:
        self.runtime.close()


def interleaved(boxes: list[Box], due: int, rounds: int) -> list[Series]:
    """``rounds`` ticks of ``due`` due rows per size, the sizes taken in turn (order rotated
    every round), so that load from other processes falls on every size alike."""
    names = [sample(box.total, due, box.total) for box in boxes]
    for box, chosen in zip(boxes, names, strict=True):
        box.tick(chosen)  # warm-up
    ticks: list[list[float]] = [[] for _ in boxes]
    for r in range(rounds):
        for i in [(r + j) % len(boxes) for j in range(len(boxes))]:
            ticks[i].append(boxes[i].tick(names[i]))
    for box, chosen in zip(boxes, names, strict=True):
        restore(box.ledger, chosen)
    return [Series(box.total, due, t) for box, t in zip(boxes, ticks, strict=True)]


@contextmanager
def captured(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """The SELECT/UPDATE statements (with parameters) run on ``engine`` meanwhile."""
    seen: list[tuple[str, Any]] = []

    def listen(
        conn: Connection, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        if not many and statement.lstrip().upper().startswith(("SELECT", "UPDATE")):
            if statement.strip() != "SELECT 1":
                seen.append((statement, params))

    event.listen(engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", listen)


def explain(box: Box, names: list[str]) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of every statement of one tick, each rolled back."""
    ledger = box.ledger
    make_due(ledger, names)
    with captured(ledger.engine) as statements:
        _, started, _ = one_tick(box.dispatcher)
    with ledger.engine.begin() as conn:
        conn.execute(delete(Run).where(Run.id.in_(started)))
    make_due(ledger, names)
    for statement, params in statements:
        print("  " + "-" * 78)
        print("  " + " ".join(statement.split())[:400])
        with ledger.engine.connect() as conn:
            trans = conn.begin()
            plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)
            for (line,) in plan:
                print(f"    {line}")
            trans.rollback()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--explain", action="store_true", help="always print EXPLAIN ANALYZE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as empty, ExitStack() as stack:
        boxes: list[Box] = []
        for total in SIZES:
            url = stack.enter_context(scratch_database(f"dispatch{total}"))
            box = Box(total, url, empty)
            stack.callback(box.close)
            boxes.append(box)
        setup = ", ".join(f"{b.total}: {b.setup:.1f} s" for b in boxes)
        print(f"setup (policies, schedules, one finished run per secret; VACUUM ANALYZE): {setup}")

        equal = interleaved(boxes, EQUAL_DUE, ROUNDS)
        busy: list[Series] = []
        for box in boxes:
            due = int(box.total * DUE_FRACTION)
            if due == EQUAL_DUE:
                busy.append(equal[boxes.index(box)])
                continue
            if box.total > BUSY_MAX:
                continue
            busy.append(box.series(sample(box.total, due, box.total + 1), BUSY_REPEATS))

        print(f"{'schedules':>10} {'due':>6} {'median tick':>12} {'min':>10} {'ticks':>6}")
        for series in sorted(equal + busy[1:], key=lambda s: (s.total, s.due)):
            print(
                f"{series.total:>10} {series.due:>6} {series.median * 1e3:9.2f} ms "
                f"{min(series.ticks) * 1e3:7.2f} ms {len(series.ticks):>6}"
            )
        small, large = equal[0], equal[-1]
        ratio = statistics.median(b / a for a, b in zip(small.ticks, large.ticks, strict=True))
        print(
            f"tick at {large.total} / tick at {small.total}, {EQUAL_DUE} due each: median of "
            f"same-round ratios {ratio:.2f}x (target <= {TARGET}); ratio of medians "
            f"{large.median * 1e3:.2f} / {small.median * 1e3:.2f} ms = "
            f"{large.median / small.median:.2f}x, "
            f"of mins {min(large.ticks) / min(small.ticks):.2f}x"
        )
        middle = equal[boxes.index(next(b for b in boxes if b.total == busy[-1].total))]
        per_run = (busy[-1].median - middle.median) / (busy[-1].due - EQUAL_DUE)
        print(
            f"1% due: {busy[-1].median * 1e3:.0f} ms for {busy[-1].due} due at "
            f"{busy[-1].total}; each started run adds {per_run * 1e3:.2f} ms to a tick"
        )
        ok = check(
            ratio <= TARGET,
            f"tick grows {ratio:.2f}x from {small.total} to {large.total} schedules",
        )
        if args.explain or not ok:
            print(f"EXPLAIN (ANALYZE, BUFFERS) at {large.total} schedules, {EQUAL_DUE} due:")
            explain(boxes[-1], sample(boxes[-1].total, EQUAL_DUE, 8))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
