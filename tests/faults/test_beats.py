"""Beat under duplication and restarts: never a duplicate run, never a skipped or early one.

Scenario — two beats for a minute (issue 7: "Two beats for a minute: zero duplicate runs").
- What: two ``celery -A worker beat`` processes (each ticking ``keyturn.dispatch_due`` every
  second) and one ``celery -A worker worker`` (-c 2) over Redis, Postgres ledger, local store;
  one glob policy over 20 secrets with ``every: 5s`` and no grace, for 60 s; then the policy is
  paused and the runs in flight finish.
- Trials: one minute, 20 secrets; the total number of runs is reported (a few hundred).
- Expected: both beats sent ticks; every run ``succeeded``; per secret, runs never overlap in
  time (each starts after the previous one finished) and each starts at least 5 s after the
  previous one finished (so >= 5 s after it started); every secret rotated at least twice; the
  store's current value carries the last run's token, and every run promoted its own version.

Scenario — beat restarted every few ticks over 60 simulated days (issue 7: "every 30-day policy
rotated on time and none twice").
- What: in-process, on a Postgres ledger, with an injected clock stepping 1 hour per tick from a
  Monday 00:00 UTC for 60 days (1440 ticks). Each tick runs TWO dispatchers (two beats), then a
  worker drains the enqueued steps with ``Engine.advance``; every 3rd tick the Runtime, Engine
  and both Dispatchers are thrown away and rebuilt on the same ledger (a beat and worker
  restart), and the messages of that tick are dropped (lost with the restarted process), so the
  ledger's recovery has to re-enqueue them. Ten secrets under 30-day policies: 4 plain, 3 with a
  nightly window (02:00-04:00), 2 with a weekend window, 1 with a 2-day jitter.
- Expected: each secret rotated exactly twice (day 0 and day ~30); no two starts less than 30
  days apart; each start is exactly the first tick at which the dispatcher may start it:
  ``rotation.policy.due.next_due`` from the previous finish (or from the sync for the first),
  rounded up to a tick, moved to the window's next opening when the tick is outside the window;
  the schedule's final ``next_due_at`` is ``next_due`` after the second rotation (after day 60).
"""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rotation.ledger.db import Ledger
from rotation.ledger.models import Schedule
from rotation.policy import Policy, load_policies
from rotation.policy.due import in_window, next_due, next_window_start
from rotation.providers.memory import MemoryProvider
from rotation.run.engine import Engine
from rotation.run.runtime import Runtime
from rotation.scheduler.dispatcher import Dispatcher
from rotation.values import Stage
from tests.backends.cluster import store
from tests.faults.helpers import (
    FINAL,
    cluster_env,
    deadline_wait,
    new_cluster,
    running,
    runs_of,
    write_policy,
)

# --- two beats for a minute --------------------------------------------------------------------

BUSY_SECRETS = [f"svc/tok-{i:02d}" for i in range(20)]
BUSY_POLICY = """
policies:
  - name: busy
    secrets: ["svc/tok-*"]
    kind: random
    schedule: {{every: 5s}}
    retire_after: 0s
    max_attempts: 5
    paused: {paused}
"""
MINUTE = 60.0


def test_two_beats_for_a_minute_start_no_duplicate_run(
    tmp_path: Path, ledger_url: str, ledger: Ledger
) -> None:
    env = cluster_env(
        tmp_path, ledger_url, KEYTURN_LEASE_SECONDS="30", KEYTURN_REDELIVER_SECONDS="10"
    )
    with running(new_cluster(env, tmp_path)) as cluster:
        backend = store(cluster)
        for name in BUSY_SECRETS:
            backend.write(name, f"initial-{name}")
        write_policy(cluster, "busy", BUSY_POLICY.format(paused="false"))
        worker = cluster.start("worker")
        beats = [cluster.start("beat"), cluster.start("beat")]
        time.sleep(MINUTE)  # the scenario's duration, not a synchronisation
        write_policy(cluster, "busy", BUSY_POLICY.format(paused="true"))  # no new runs
        deadline_wait(
            lambda: all(r.state in FINAL for r in runs_of(ledger)),
            60,
            "the runs in flight to finish",
            cluster.logs,
            interval=0.5,
        )
        assert worker.poll() is None and all(b.poll() is None for b in beats)
        ticks = [(tmp_path / f"beat-{i}.log").read_text().count("Sending due task") for i in (1, 2)]
        assert min(ticks) >= MINUTE / 2, ticks  # both beats really ticked all along

        runs = runs_of(ledger)
        assert {r.state for r in runs} == {"succeeded"}, [(r.secret, r.last_error) for r in runs]
        assert len({r.to_version for r in runs}) == len(runs)  # one own version per run
        per_secret = {name: [r for r in runs if r.secret == name] for name in BUSY_SECRETS}
        gaps: list[float] = []
        for name, mine in per_secret.items():
            assert len(mine) >= 2, (name, len(mine))
            mine.sort(key=lambda r: r.created_at)
            for before, after in itertools.pairwise(mine):
                assert before.finished_at is not None
                # no overlap, and the interval counted from the previous finish
                assert after.created_at >= before.finished_at + timedelta(seconds=5), (
                    name,
                    before.id,
                    after.id,
                )
                gaps.append((after.created_at - before.created_at).total_seconds())
            assert backend.read(name).token == mine[-1].token
            assert backend.read(name, stage=Stage.PREVIOUS).version_id == mine[-1].from_version
        print(
            f"figures: runs={len(runs)} beat_ticks={ticks} "
            f"min_start_gap_s={min(gaps):.2f} max_start_gap_s={max(gaps):.2f}"
        )


# --- beat restarted every few ticks over 60 simulated days -------------------------------------

START = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)  # a Monday
TICK = timedelta(hours=1)
SIMULATED = timedelta(days=60)
RESTART_EVERY = 3  # ticks
SIM_POLICIES = """
policies:
  - name: plain
    secrets: [plain/a, plain/b, plain/c, plain/d]
    provider: memory
    kind: random
    schedule: {every: 30d}
    retire_after: 10m
  - name: nightly
    secrets: [nightly/a, nightly/b, nightly/c]
    provider: memory
    kind: random
    schedule: {every: 30d}
    window: {start: "02:00", end: "04:00"}
    retire_after: 10m
  - name: weekend
    secrets: [weekend/a, weekend/b]
    provider: memory
    kind: random
    schedule: {every: 30d}
    window: {days: [sat, sun]}
    retire_after: 10m
  - name: jittered
    secrets: [jitter/a]
    provider: memory
    kind: random
    schedule: {every: 30d}
    jitter: 2d
    retire_after: 10m
"""


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _first_start(policy: Policy, due: datetime) -> datetime:
    """The first tick at which a dispatcher starts a run due at ``due`` (see the dispatcher:
    due and in the window -> claimed; due outside it -> moved to the window's next opening)."""
    for _ in range(100):
        ticks = -((START - due) // TICK)  # ceil((due - START) / TICK)
        at = START + max(0, ticks) * TICK
        if in_window(policy, at):
            return at
        due = next_window_start(policy, at)
    raise AssertionError("no start found")


def test_beat_restarts_over_sixty_days_rotate_on_time_and_never_twice(
    tmp_path: Path, ledger_url: str
) -> None:
    schedules = tmp_path / "schedules"
    schedules.mkdir()
    (schedules / "sim.yaml").write_text(SIM_POLICIES)
    policies = {p.name: p for p in load_policies(schedules).policies}
    secrets = {name: p for p in policies.values() for name in p.patterns}
    assert len(secrets) == 10
    backend = MemoryProvider()
    for name in secrets:
        backend.write(name, f"initial-{name}")
    clock = FakeClock(START)

    def boot(generation: int) -> tuple[Runtime, Engine, list[Dispatcher]]:
        runtime = Runtime(
            Ledger(ledger_url),
            clock=clock,
            worker_id=f"sim-{generation}",
            providers={"memory": backend},
        )
        # exact names only: no glob listing to refresh; a restart re-syncs the files anyway
        dispatchers = [
            Dispatcher(runtime, schedules, glob_refresh=timedelta(days=365)) for _ in range(2)
        ]
        return runtime, Engine(runtime), dispatchers

    generation = 0
    runtime, engine, dispatchers = boot(generation)
    restarts = steps = dropped = 0
    started = time.monotonic()
    try:
        tick = 0
        while clock.now < START + SIMULATED:
            queue: list[tuple[int, str]] = []
            for dispatcher in dispatchers:
                queue.extend(dispatcher.tick().enqueue)
            if tick % RESTART_EVERY == RESTART_EVERY - 1:
                dropped += len(queue)  # the restart loses this tick's messages
                runtime.ledger.dispose()
                generation += 1
                runtime, engine, dispatchers = boot(generation)
                restarts += 1
                queue = []
            for _ in range(1000):  # a worker draining the queue; bounded
                if not queue:
                    break
                run_id, state = queue.pop(0)
                outcome = engine.advance(run_id, state)
                steps += outcome.executed
                if outcome.enqueue and outcome.state is not None:
                    queue.append((run_id, outcome.state.value))
            assert not queue, "the worker did not drain the queue"
            tick += 1
            clock.now = START + tick * TICK
    finally:
        runtime.ledger.dispose()
    elapsed = time.monotonic() - started

    ledger = Ledger(ledger_url)
    try:
        runs = runs_of(ledger)
        with ledger.sessions() as session:
            final = {s.secret: s for s in session.query(Schedule)}
    finally:
        ledger.dispose()
    assert {r.state for r in runs} == {"succeeded"}, [(r.secret, r.state) for r in runs]
    for name, policy in secrets.items():
        mine = sorted((r for r in runs if r.secret == name), key=lambda r: r.created_at)
        assert len(mine) == 2, (name, [r.created_at for r in mine])  # exactly twice
        first, second = mine
        assert first.created_at == _first_start(policy, next_due(policy, name, None, START))
        assert first.finished_at is not None and second.finished_at is not None
        due = next_due(policy, name, first.finished_at, first.finished_at)
        assert second.created_at == _first_start(policy, due), (name, second.created_at, due)
        assert second.created_at - first.created_at >= timedelta(days=30)  # never early
        assert second.created_at - first.created_at <= timedelta(days=30 + 2 + 7)  # never late
        schedule = final[name]
        assert schedule.last_rotated_at == second.finished_at
        assert schedule.next_due_at == next_due(
            policy, name, second.finished_at, second.finished_at
        )
        assert schedule.next_due_at > START + SIMULATED
        assert backend.read(name).token == second.token
        assert len(backend.versions(name)) == 3  # initial + exactly two new versions
    print(
        f"figures: ticks={tick} restarts={restarts} dropped_messages={dropped} "
        f"steps={steps} runs={len(runs)} wall_s={elapsed:.1f}"
    )
