"""A ledger with a run in every state (fixture ``every_state``), for dashboard and Grafana tests.

Runs are driven by the real engine in-process on a memory backend (one secret per state), then
a few are put where only time or a human would take them (needs_attention, stalled, overdue).
:class:`RecordingMemory` remembers every value ever written or staged, for the leak scan.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from rotation.ledger.db import Ledger
from rotation.ledger.models import Run, RunEvent, Schedule
from rotation.ledger.ticks import record_tick
from rotation.ops.operations import rollback_secret
from rotation.providers.memory import MemoryProvider
from rotation.run.engine import Engine
from rotation.run.runtime import Runtime
from rotation.run.states import RunState
from rotation.scheduler.dispatcher import Dispatcher
from rotation.scheduler.triggers import rotate_now
from rotation.values import SecretValue
from tests.faults.leakscan import needles_of

#: secret -> the state its run is left in (None: never rotated).
TARGETS: dict[str, str | None] = {
    "svc/pending": "pending",
    "svc/created": "created",
    "svc/applied": "applied",
    "svc/tested": "tested",
    "svc/promoted": "promoted",
    "grace/restarted": "restarted",
    "svc/retired": "retired",
    "svc/succeeded": "succeeded",
    "svc/failed": "failed",
    "svc/needs_attention": "needs_attention",
    "svc/stalled": "created",
    "svc/overdue": None,
    "svc/idle": None,
    "frozen/paused": None,
    "db/report": None,
    "db/app_role": None,
}

POLICIES = """
policies:
  - name: services
    secrets: ["svc/*"]
    provider: memory
    kind: random
    schedule: {every: 30d}
    retire_after: 0s
  - name: graceful
    secrets: [grace/restarted]
    provider: memory
    kind: random
    schedule: {every: 30d}
    retire_after: 1h
  - name: frozen
    secret: frozen/paused
    provider: memory
    kind: random
    schedule: {every: 30d}
    paused: true
  - name: databases
    secrets: [db/report, db/app_role]
    provider: memory
    kind: random
    schedule: {every: 90d}
"""
NEEDS_ATTENTION_ERROR = "attempts exhausted at step apply (5): TargetRejected on db:5432"


class RecordingMemory(MemoryProvider):
    """A memory backend that remembers every value it was given (the leak scan's needles)."""

    def __init__(self) -> None:
        super().__init__()
        self.needles: set[str] = set()

    def write(self, name: str, value: SecretValue, *, expected_version: str | None = None) -> str:
        self.needles |= needles_of(value)
        return super().write(name, value, expected_version=expected_version)

    def stage_pending(self, name: str, value: SecretValue, *, token: str) -> str:
        self.needles |= needles_of(value)
        return super().stage_pending(name, value, token=token)


@dataclass
class EveryState:
    """The populated ledger: its URL, the runs by secret, and every value the secrets had."""

    url: str
    runs: dict[str, int] = field(default_factory=dict)
    needles: set[str] = field(default_factory=set)
    #: The day two secrets of one backend are due within seconds of each other.
    collision_day: str = ""
    #: The secret whose schedule records an expiry, and how many days away it is.
    expiring: tuple[str, int] = ("svc/succeeded", 20)


def populate(url: str, tmp: Path) -> EveryState:
    schedules = tmp / "schedules"
    schedules.mkdir(parents=True, exist_ok=True)
    (schedules / "every-state.yaml").write_text(POLICIES)
    backend = RecordingMemory()
    for index, secret in enumerate(TARGETS):
        backend.write(secret, f"initial-{secret.replace('/', '-')}-value-{index:04d}")
    runtime = Runtime(Ledger(url), worker_id="test-worker", providers={"memory": backend})
    state = EveryState(url)
    try:
        Dispatcher(runtime, schedules).sync_policies(runtime.clock())
        with runtime.ledger.transaction() as session:  # a dispatcher ticked, as in a deployment
            record_tick(session, runtime.clock(), "test-worker")
        engine = Engine(runtime, lease=timedelta(minutes=5))
        for secret, target in TARGETS.items():
            if target is None:
                continue
            run_id = rotate_now(runtime, secret, actor="alice", trigger="manual").run_id
            state.runs[secret] = run_id
            goal = {"failed": "promoted", "needs_attention": "applied"}.get(target, target)
            _drive(runtime, engine, run_id, RunState(goal))
            if target == "failed":  # the workers' part of the rollback, in-process here
                rollback_secret(runtime, secret, "alice")
                _drive(runtime, engine, run_id, RunState.FAILED)
            if target == "restarted":  # the retire step starts its grace: a wait event
                assert engine.advance(run_id, target).wait_until is not None
        _finish(runtime, state)
    finally:
        runtime.close()
    state.needles = set(backend.needles)
    return state


def _drive(runtime: Runtime, engine: Engine, run_id: int, goal: RunState) -> None:
    for _ in range(20):
        with runtime.ledger.sessions() as session:
            run = session.get(Run, run_id)
            assert run is not None
        if RunState(run.state) in (goal, RunState.SUCCEEDED, RunState.FAILED):
            assert run.state == goal.value, (run.state, goal, run.last_error)
            return
        if not engine.advance(run_id, run.state).executed:
            raise AssertionError(f"run {run_id} waits in {run.state} before {goal}")
    raise AssertionError(f"run {run_id} did not reach {goal}")


def _finish(runtime: Runtime, state: EveryState) -> None:
    now = datetime.now(UTC)
    with runtime.ledger.transaction() as session:
        attention = state.runs["svc/needs_attention"]
        session.execute(
            update(Run)
            .where(Run.id == attention)
            .values(state="needs_attention", last_error=NEEDS_ATTENTION_ERROR, finished_at=now)
        )
        session.add(
            RunEvent(
                run_id=attention,
                at=now,
                step="apply",
                from_state="created",
                to_state="needs_attention",
                outcome="failed",
                attempt=5,
                worker="test-worker",
                message=NEEDS_ATTENTION_ERROR,
            )
        )
        stalled, hour_ago = state.runs["svc/stalled"], now - timedelta(hours=1)
        session.execute(
            update(Run)
            .where(Run.id == stalled)
            .values(updated_at=hour_ago, created_at=hour_ago, next_attempt_at=None)
        )
        # stall detection looks at progress (the last event), not at updated_at
        session.execute(update(RunEvent).where(RunEvent.run_id == stalled).values(at=hour_ago))
        session.execute(
            update(Schedule)
            .where(Schedule.secret.in_(["svc/overdue", "frozen/paused"]))
            .values(next_due_at=now - timedelta(hours=2))
        )
        session.execute(
            update(Schedule)
            .where(Schedule.secret == "svc/idle")
            .values(next_due_at=now + timedelta(days=12))
        )
        clash = (now + timedelta(days=3)).replace(hour=3, minute=0, second=0, microsecond=0)
        session.execute(
            update(Schedule).where(Schedule.secret == "db/report").values(next_due_at=clash)
        )
        session.execute(
            update(Schedule)
            .where(Schedule.secret == "db/app_role")
            .values(next_due_at=clash + timedelta(seconds=40))
        )
        secret, days = state.expiring
        session.execute(
            update(Schedule)
            .where(Schedule.secret == secret)
            .values(expires_at=now + timedelta(days=days, hours=1), expiry_checked_at=now)
        )
    state.collision_day = clash.date().isoformat()


@pytest.fixture(scope="module")
def every_state(
    ledger_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EveryState]:
    """A ledger (its own database, cloned from the migrated template) with every state."""
    import uuid

    from psycopg import sql

    from tests.backends.ledger import _admin, _drop, _url

    name = f"kt_states_{uuid.uuid4().hex[:10]}"
    with _admin() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(ledger_template)
            )
        )
    url = _url(name).replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield populate(url, tmp_path_factory.mktemp("every-state"))
    finally:
        _drop(name)
