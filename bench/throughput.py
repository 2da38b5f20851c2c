"""End-to-end ``random`` rotations per second through real Celery workers, against the floor.

Two sides, each with its own fresh scratch Postgres ledger (migrated to head) and its own
copy of the same local store (``SECRETS_PROVIDER=local``, in a temp dir) holding ``N``
secrets ``bench/cK/key_NNN`` (``CHUNKS`` chunks) plus ``WARM`` secrets ``warm/key_NN``:

- celery: ``celery -A worker worker -c 2`` -- one worker, two prefork children: two processes
  executing steps on a 2-core machine, plus one consumer process -- over Redis. Each chunk's
  dispatcher tick is a ``keyturn.dispatch_due`` task; the bench only polls the ledger (and
  re-sends a tick every 5 s, as beat would, should a run ever be left waiting).
- floor: the same ledger and backend work issued sequentially in this process without
  Celery: one ``Dispatcher.tick()``, then ``Engine.advance(follow=True)`` (as the workers' task
  calls it) over the FIFO of enqueued runs.

Each side first rotates ``warm/*`` to the end (imports, pools, forked children warm). Then the
chunks alternate between the sides (floor, celery, celery, floor, ...), so that load from
other processes on a shared machine falls on both alike. A chunk adds one policy file
(``bench/cK/*``, ``every: 30d`` so due at once, ``retire_after`` 0 so no waits), one tick
creates its runs, and they are followed until every one has succeeded. A chunk's time runs
from its first run created to its last run finished, both read from the ledger
(``runs.created_at``, ``runs.finished_at``); a side's rate is its runs over its chunks' time.

Before that, the floor's cost per rotation on the memory backend: ``PROFILED`` ``random``
rotations in-process (same engine, a scratch Postgres ledger), first plain -- CPU time of this
process, SQL statements (SQLAlchemy ``before_cursor_execute``) and transactions (a
BEGIN..COMMIT block, or a statement run in autocommit) per rotation -- then under cProfile,
whose top 20 (cumulative) is printed and kept in ``bench-throughput.prof.txt`` (or
``--profile-out``). The local store's floor chunks are counted the same way (their rotations alone:
the dispatcher tick that created them, which lists the store, is left out, as on memory).

Targets (each printed with its figure; exit status 1 when one is missed):
CPU per rotation in the floor <= 8 ms (memory and local), transactions per step <= 1,
statements per rotation <= 20, celery rate / floor rate >= 0.8.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from _common import REPO, check, scratch_database
from sqlalchemy import func, select

from rotation.ledger.db import Ledger
from rotation.ledger.models import Run
from rotation.providers.local import LocalProvider, generate_key
from rotation.providers.memory import MemoryProvider
from rotation.run.engine import Engine
from rotation.run.runtime import Runtime
from rotation.scheduler.dispatcher import Dispatcher
from tests.backends.sql_counter import SqlCounter

TARGET = 0.8
CPU_TARGET_MS = 8.0
TX_PER_STEP_TARGET = 1.0
STATEMENTS_TARGET = 20.0
STEPS = 7  # create apply test promote restart retire finish
PROFILED = 100
N = 200
CHUNKS = 4
WARM = 10
BROKER = os.environ.get("KEYTURN_BENCH_REDIS", "redis://127.0.0.1:6379/0")
TIMEOUT = 120.0
POLICY = """
policies:
  - name: {name}
    secrets: ["{pattern}"]
    kind: random
    schedule: {{every: 30d}}
    retire_after: 0s
    max_attempts: 5
"""
FINAL = ("succeeded", "failed", "needs_attention")
TICKS = os.sysconf("SC_CLK_TCK")


def chunk_prefix(k: int) -> str:
    return f"bench/c{k}/"


def chunk_secrets(k: int) -> list[str]:
    size = N // CHUNKS
    return [f"{chunk_prefix(k)}key_{i:03d}" for i in range(k * size, (k + 1) * size)]


# --- measuring --------------------------------------------------------------------------------


def group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) of the live processes of process group ``pgid``."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            data = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        fields = data[data.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


def machine() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    return sum(values) - values[3] - values[4], sum(values)


@dataclass
class Tally:
    """What one side did over its timed chunks."""

    runs: int = 0
    seconds: float = 0.0  # sum over chunks: first run created -> last run finished
    cpu: float = 0.0  # CPU seconds of the rotating processes
    busy: int = 0  # machine busy jiffies
    total: int = 0  # machine jiffies
    chunks: list[float] = field(default_factory=list)  # rotations/s of each chunk
    statements: int = 0  # SQL statements of the rotating side (floor only)
    transactions: int = 0
    rotating_cpu: float = 0.0  # CPU seconds of the rotations alone, tick left out (floor only)

    @property
    def rate(self) -> float:
        return self.runs / self.seconds


def progress(ledger: Ledger, prefix: str) -> tuple[int, int, int]:
    """(runs, finished, failed) for secrets starting with ``prefix``."""
    with ledger.sessions() as session:
        rows = session.execute(
            select(Run.state, func.count()).where(Run.secret.startswith(prefix)).group_by(Run.state)
        ).all()
    counts = dict(rows)
    total = sum(counts.values())
    finished = sum(counts.get(s, 0) for s in FINAL)
    failed = finished - counts.get("succeeded", 0)
    return total, finished, failed


def span(ledger: Ledger, prefix: str) -> tuple[int, float]:
    """(succeeded runs, seconds from the first created to the last finished)."""
    with ledger.sessions() as session:
        first, last, count = session.execute(
            select(func.min(Run.created_at), func.max(Run.finished_at), func.count()).where(
                Run.secret.startswith(prefix), Run.state == "succeeded"
            )
        ).one()
    return int(count), (last - first).total_seconds()


def drain(engine: Engine, enqueued: list[tuple[int, str]]) -> None:
    """Advance the enqueued runs (and what they enqueue) in FIFO order, each call following
    the run's steps that are due at once, as the workers' task does."""
    queue = deque(enqueued)
    while queue:
        run_id, state = queue.popleft()
        outcome = engine.advance(run_id, state, follow=True)
        if outcome.enqueue and outcome.state is not None:
            queue.append((run_id, outcome.state.value))


def drain_counted(
    engine: Engine,
    enqueued: list[tuple[int, str]],
    counter: SqlCounter,
    prefix: str,
    expected: int,
    label: str,
) -> float:
    """``drain``, its SQL counted by ``counter``; the CPU seconds it took. Fails unless all
    ``expected`` runs of ``prefix`` succeeded."""
    counter.active = True
    cpu0 = time.process_time()
    drain(engine, enqueued)
    cpu = time.process_time() - cpu0
    counter.active = False
    total, finished, failed = progress(engine.runtime.ledger, prefix)
    if failed or finished != total or total != expected:
        raise RuntimeError(f"{label}: {prefix}: {finished}/{total} finished, {failed} failed")
    return cpu


# --- the two sides ------------------------------------------------------------------------------


class Side:
    """A ledger, a store and a schedules dir; ``rotate`` runs one policy's rotations."""

    label = ""

    def __init__(self, root: Path, pristine: Path, key: str, url: str) -> None:
        self.key = key
        self.store = root / self.label / "store"
        shutil.copytree(pristine, self.store)
        self.schedules = root / self.label / "schedules"
        self.schedules.mkdir()
        self.ledger = Ledger(url)
        self.tally = Tally()

    def add_policy(self, name: str, pattern: str) -> None:
        (self.schedules / f"{name}.yaml").write_text(POLICY.format(name=name, pattern=pattern))

    def cpu(self) -> float:
        raise NotImplementedError

    def run(self, name: str, prefix: str, expected: int) -> tuple[int, int, float]:
        """Rotate one chunk; the SQL statements, transactions and CPU seconds its rotations
        took, leaving out the dispatcher tick that created them (floor only)."""
        raise NotImplementedError

    def rotate(self, name: str, prefix: str, expected: int, *, timed: bool) -> None:
        cpu0, (busy0, total0) = self.cpu(), machine()
        statements, transactions, rotating_cpu = self.run(name, prefix, expected)
        busy, total = machine()
        runs, seconds = span(self.ledger, prefix)
        if runs != expected:
            raise RuntimeError(f"{self.label}: {runs} of {expected} {prefix} runs succeeded")
        if timed:
            t = self.tally
            t.runs += runs
            t.seconds += seconds
            t.cpu += self.cpu() - cpu0
            t.statements += statements  # the warm-up's are not counted: its runs are not
            t.transactions += transactions
            t.rotating_cpu += rotating_cpu
            t.busy += busy - busy0
            t.total += total - total0
            t.chunks.append(runs / seconds)

    def verify(self) -> None:
        """Every bench secret has exactly one new version."""
        provider = LocalProvider(self.store, key=self.key)
        try:
            for k in range(CHUNKS):
                for name in chunk_secrets(k):
                    if len(provider.versions(name)) != 2:
                        raise RuntimeError(f"{self.label}: {name} lacks exactly one new version")
        finally:
            provider.close()

    def close(self) -> None:
        self.ledger.dispose()


class Floor(Side):
    """Sequential ``Engine.advance`` in this process."""

    label = "floor"

    def __init__(self, root: Path, pristine: Path, key: str, url: str) -> None:
        super().__init__(root, pristine, key, url)
        environ = {
            "SECRETS_PROVIDER": "local",
            "KEYTURN_LOCAL_DIR": str(self.store),
            "KEYTURN_LOCAL_KEY": key,
        }
        self.runtime = Runtime(Ledger(url), environ=environ, worker_id="bench-floor")
        self.engine = Engine(self.runtime)
        self.dispatcher = Dispatcher(self.runtime, self.schedules)
        self.counter = SqlCounter(self.runtime.ledger.engine)

    def cpu(self) -> float:
        return time.process_time()

    def run(self, name: str, prefix: str, expected: int) -> tuple[int, int, float]:
        self.add_policy(name, f"{prefix}*")
        counter = self.counter
        s0, t0 = counter.statements, counter.transactions
        enqueued = self.dispatcher.tick().enqueue  # the tick is not the rotations' cost
        cpu = drain_counted(self.engine, enqueued, counter, prefix, expected, "floor")
        return counter.statements - s0, counter.transactions - t0, cpu

    def close(self) -> None:
        self.runtime.close()
        super().close()


class Celery(Side):
    """Real ``celery -A worker worker`` processes on a queue of their own."""

    label = "celery"

    def __init__(
        self, root: Path, pristine: Path, key: str, url: str, workers: int, concurrency: int
    ) -> None:
        from celery import Celery as App

        super().__init__(root, pristine, key, url)
        self.queue = f"kt-bench-{uuid.uuid4().hex[:8]}"
        self.env = {
            **os.environ,
            "KEYTURN_DATABASE_URL": url,
            "KEYTURN_BROKER_URL": BROKER,
            "KEYTURN_QUEUE": self.queue,
            "SECRETS_PROVIDER": "local",
            "KEYTURN_LOCAL_DIR": str(self.store),
            "KEYTURN_LOCAL_KEY": key,
            "KEYTURN_SCHEDULES": str(self.schedules),
            "PYTHONUNBUFFERED": "1",
        }
        self.app = App(broker=BROKER)
        self.app.conf.update(broker_connection_retry_on_startup=True)
        self.logs: list[Path] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.names: list[str] = []
        for i in range(workers):
            self._start(root / f"worker-{i}.log", concurrency)
        self._wait_ready()

    def _start(self, log: Path, concurrency: int) -> None:
        name = f"bench-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
        args = [sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", self.queue]
        args += ["-c", str(concurrency), "-n", name, "--loglevel=WARNING"]
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                args,
                env=self.env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: CPU accounting and stop
            )
        self.procs.append(proc)
        self.names.append(name)
        self.logs.append(log)

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        waiting = set(self.names)
        while waiting and time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"a worker exited:\n{self.tail()}")
            for reply in self.app.control.ping(destination=list(waiting), timeout=0.5):
                waiting -= set(reply)
        if waiting:
            raise RuntimeError(f"workers did not answer a ping in {timeout} s:\n{self.tail()}")

    def tail(self) -> str:
        return "\n".join(log.read_text(errors="replace")[-2000:] for log in self.logs)

    def cpu(self) -> float:
        return sum(group_cpu(p.pid) for p in self.procs)

    def tick(self) -> None:
        self.app.send_task("keyturn.dispatch_due", queue=self.queue)

    def run(self, name: str, prefix: str, expected: int) -> tuple[int, int, float]:
        self.add_policy(name, f"{prefix}*")
        self.tick()
        deadline = time.monotonic() + TIMEOUT
        next_tick = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            total, finished, failed = progress(self.ledger, prefix)
            if failed:
                raise RuntimeError(f"celery: {failed} {prefix} runs failed:\n{self.tail()}")
            if total >= expected and finished == total:
                return 0, 0, 0.0  # not counted here
            if time.monotonic() >= next_tick:  # as beat would: wake anything left waiting
                self.tick()
                next_tick = time.monotonic() + 5.0
            time.sleep(0.05)
        raise RuntimeError(f"celery: {prefix} runs not done in {TIMEOUT} s:\n{self.tail()}")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        try:
            with self.app.connection_for_write() as conn:
                client = conn.default_channel.client
                client.delete(
                    self.queue,
                    f"_kombu.binding.{self.queue}",
                    f"_kombu.binding_permanent.{self.queue}",
                )
        finally:
            self.app.close()
            super().close()


# --- main ----------------------------------------------------------------------------------------


def make_store(root: Path) -> tuple[Path, str]:
    key = generate_key()
    pristine = root / "pristine"
    provider = LocalProvider(pristine, key=key)
    for i in range(WARM):
        provider.write(f"warm/key_{i:02d}", f"initial-warm-{i}")
    for k in range(CHUNKS):
        for name in chunk_secrets(k):
            provider.write(name, f"initial-{name}")
    provider.close()
    return pristine, key


def report(label: str, t: Tally) -> None:
    per_chunk = ", ".join(f"{r:.1f}" for r in t.chunks)
    print(
        f"  {label:46s} {t.runs} in {t.seconds:6.2f} s = {t.rate:5.1f} rotations/s  "
        f"(chunks: {per_chunk})"
    )
    print(
        f"  {'':46s} CPU {t.cpu / t.runs * 1e3:5.1f} ms/rotation in the rotating processes; "
        f"machine {t.busy / max(1, t.total):.0%} busy"
    )


@dataclass
class Cost:
    """The floor's cost per rotation on one backend."""

    label: str
    rotations: int
    steps: int
    cpu: float
    statements: int
    transactions: int

    def show(self) -> bool:
        cpu_ms = self.cpu / self.rotations * 1e3
        per_step = self.transactions / self.steps
        statements = self.statements / self.rotations
        print(
            f"  floor, {self.label}: {self.rotations} rotations, {self.steps} steps: "
            f"CPU {cpu_ms:.1f} ms/rotation (target <= {CPU_TARGET_MS:g}); "
            f"{statements:.1f} statements/rotation (target <= {STATEMENTS_TARGET:g}); "
            f"{per_step:.2f} transactions/step (target <= {TX_PER_STEP_TARGET:g})"
        )
        ok = check(cpu_ms <= CPU_TARGET_MS, f"{self.label}: CPU {cpu_ms:.1f} ms per rotation")
        ok &= check(
            statements <= STATEMENTS_TARGET, f"{self.label}: {statements:.1f} statements/rotation"
        )
        ok &= check(
            per_step <= TX_PER_STEP_TARGET,
            f"{self.label}: {per_step:.2f} transactions per step"
            + (f" ({TX_NOTE})" if per_step > TX_PER_STEP_TARGET else ""),
        )
        return bool(ok)


#: Where a step's transactions come from (docs/rotation-run.md, "What a step costs the ledger").
TX_NOTE = (
    "a run's first lease, then each step's commit, which also takes the next step's lease "
    "(retire and finish in one transaction); a lease's first fence check asks the ledger "
    "when the statement that took it is 0.5 s old or more, every check after an action does"
)


def memory_cost(url: str, profile_out: Path) -> Cost:
    """The floor on the memory backend: ``PROFILED`` rotations measured, as many profiled."""
    backend = MemoryProvider()
    environ = {"SECRETS_PROVIDER": "memory"}
    runtime = Runtime(
        Ledger(url), environ=environ, worker_id="bench-memory", providers={"memory": backend}
    )
    try:
        with tempfile.TemporaryDirectory(prefix="keyturn-bench-mem-") as tmp:
            schedules = Path(tmp)
            engine = Engine(runtime)
            dispatcher = Dispatcher(runtime, schedules)
            counter = SqlCounter(runtime.ledger.engine)

            def rotate(name: str) -> tuple[int, float]:
                for i in range(PROFILED):
                    backend.write(f"{name}/key_{i:03d}", f"initial-{i}")
                (schedules / f"{name}.yaml").write_text(
                    POLICY.format(name=name, pattern=f"{name}/*")
                )
                enqueued = dispatcher.tick().enqueue
                cpu = drain_counted(engine, enqueued, counter, f"{name}/", PROFILED, "memory")
                return PROFILED * STEPS, cpu

            rotate("mwarm")
            counter.statements = counter.transactions = 0
            steps, cpu = rotate("mtimed")
            cost = Cost("memory", PROFILED, steps, cpu, counter.statements, counter.transactions)
            profiler = cProfile.Profile(time.process_time)  # CPU, not waits
            profiler.enable()
            rotate("mprof")
            profiler.disable()
    finally:
        runtime.close()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(20)
    profile_out.write_text(out.getvalue())
    print(f"cProfile (CPU time) of {PROFILED} random rotations (memory), top 20 cumulative:")
    print("\n".join(out.getvalue().strip().splitlines()[:45]))
    print(f"(kept in {profile_out})")
    return cost


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--concurrency", type=int, default=2, help="worker -c (default 2)")
    parser.add_argument(
        "--profile-out",
        type=Path,
        default=Path("bench-throughput.prof.txt"),
        help="where the cProfile top 20 is kept (default bench-throughput.prof.txt)",
    )
    parser.add_argument(
        "--scratch",
        type=Path,
        default=REPO / ".keyturn-bench",
        help="where the local stores go (default .keyturn-bench/ in the repository, beside "
        "the embedded setup's .keyturn/; on a machine whose /tmp makes creating a file cost "
        "~1 ms of CPU, as this one's did, pass /tmp to see that cost)",
    )
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores")
    args.scratch.mkdir(exist_ok=True)
    with scratch_database("memory") as memory_url:
        memory = memory_cost(memory_url, args.profile_out)
    scratch = tempfile.TemporaryDirectory(prefix="keyturn-bench-", dir=args.scratch)
    with scratch as tmp, ExitStack() as stack:
        root = Path(tmp)
        pristine, key = make_store(root)
        floor_url = stack.enter_context(scratch_database("floor"))
        celery_url = stack.enter_context(scratch_database("celery"))
        floor = Floor(root, pristine, key, floor_url)
        stack.callback(floor.close)
        celery = Celery(root, pristine, key, celery_url, args.workers, args.concurrency)
        stack.callback(celery.close)
        sides: list[Side] = [floor, celery]
        for side in sides:
            side.rotate("warm", "warm/", WARM, timed=False)
        for k in range(CHUNKS):
            order = sides if k % 2 == 0 else sides[::-1]
            for side in order:
                side.rotate(f"bench-c{k}", chunk_prefix(k), len(chunk_secrets(k)), timed=True)
        for side in sides:
            side.verify()
        ratio = celery.tally.rate / floor.tally.rate
        print(f"{N} random rotations (7 steps each), local store, Postgres ledger")
        print(f"in {CHUNKS} chunks alternating between the sides; rotations/s per chunk in ()")
        report("floor  (sequential Engine.advance, in-process)", floor.tally)
        report(f"celery ({args.workers} worker, -c {args.concurrency}, Redis broker)", celery.tally)
        print(f"  ratio celery/floor: {ratio:.2f} (target >= {TARGET})")
        t = floor.tally
        # as on the memory backend: the rotations' CPU, not the dispatcher tick that made them
        local = Cost("local", t.runs, t.runs * STEPS, t.rotating_cpu, t.statements, t.transactions)
        ok = memory.show()
        ok &= local.show()
        ok &= check(ratio >= TARGET, f"celery reaches {ratio:.2f}x the sequential floor")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
