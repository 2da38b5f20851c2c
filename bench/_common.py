"""Helpers shared by the benchmarks: the repo on ``sys.path``, scratch ledgers, paired timing.

Importing this module puts the repository root first on ``sys.path``, so a bench run as
``.venv/bin/python bench/X.py`` can import the tests' server helpers (``tests.backends...``).
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

__all__ = [
    "ADMIN_URL",
    "REPO",
    "Paired",
    "alternating",
    "check",
    "paired",
    "scratch_database",
]

#: The server scratch ledgers are created on (trust auth, user postgres).
ADMIN_URL = os.environ.get("KEYTURN_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def scratch_database(label: str) -> Iterator[str]:
    """A fresh database migrated to head (``rotation.ledger.migrate.upgrade``), dropped on exit.

    Yields its SQLAlchemy URL (``postgresql+psycopg://...``)."""
    import psycopg
    from psycopg import sql

    from rotation.ledger.migrate import upgrade

    name = f"kt_bench_{label}_{uuid.uuid4().hex[:8]}"
    base = ADMIN_URL.rsplit("/", 1)[0]
    url = f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@dataclass(frozen=True)
class Paired:
    """Per-call seconds of two callables timed in alternating blocks (AB BA AB ...)."""

    a: list[float]
    b: list[float]

    @property
    def a_min(self) -> float:
        return min(self.a)

    @property
    def b_min(self) -> float:
        return min(self.b)

    @property
    def a_median(self) -> float:
        return statistics.median(self.a)

    @property
    def b_median(self) -> float:
        return statistics.median(self.b)

    @property
    def ratio_of_mins(self) -> float:
        """b / a on the fastest sample of each: the least disturbed cost of each."""
        return self.b_min / self.a_min

    @property
    def ratio_of_medians(self) -> float:
        return self.b_median / self.a_median

    @property
    def ratio_of_pairs(self) -> float:
        """The median of b/a over adjacent samples: cancels drift between rounds."""
        return statistics.median(b / a for a, b in zip(self.a, self.b, strict=True))


def _block(fn: Callable[[], object], number: int) -> float:
    clock = time.perf_counter
    start = clock()
    for _ in range(number):
        fn()
    return (clock() - start) / number


def paired(a: Callable[[], object], b: Callable[[], object], *, rounds: int, number: int) -> Paired:
    """Time ``number`` calls of ``a`` then of ``b`` (order swapped every round), ``rounds``
    times, with the garbage collector off inside each block, as ``timeit`` does."""
    times_a: list[float] = []
    times_b: list[float] = []
    enabled = gc.isenabled()
    try:
        for i in range(rounds):
            gc.collect()
            gc.disable()
            if i % 2 == 0:
                ta = _block(a, number)
                tb = _block(b, number)
            else:
                tb = _block(b, number)
                ta = _block(a, number)
            if enabled:
                gc.enable()
            times_a.append(ta)
            times_b.append(tb)
    finally:
        if enabled:
            gc.enable()
    return Paired(times_a, times_b)


def alternating(a: Callable[[], object], b: Callable[[], object], *, calls: int) -> Paired:
    """Time single calls of ``a`` and ``b`` alternately (ab ba ab ...), ``calls`` of each.

    For calls of a millisecond or so (a network round trip): per-call samples, so drift and
    noise from other processes hit both sides alike, and medians are stable."""
    clock = time.perf_counter
    times_a: list[float] = []
    times_b: list[float] = []
    for i in range(calls):
        first, second = (a, b) if i % 2 == 0 else (b, a)
        t0 = clock()
        first()
        t1 = clock()
        second()
        t2 = clock()
        ta, tb = (t1 - t0, t2 - t1) if i % 2 == 0 else (t2 - t1, t1 - t0)
        times_a.append(ta)
        times_b.append(tb)
    return Paired(times_a, times_b)


def check(ok: bool, what: str) -> bool:
    """Print ``what`` with PASS/FAIL; returns ``ok``."""
    print(f"  -> {'PASS' if ok else 'FAIL'}: {what}")
    return ok
