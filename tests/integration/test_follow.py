"""``Engine.advance(follow=True)`` (the workers' task): the steps of a run that are due at once
run in one call, each under a lease of its own that the previous step's commit took, within
one step's time budget; a lease lost in between stops the chain before any external action."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from rotation.ledger.db import Ledger
from rotation.ledger.models import Run, RunEvent
from rotation.providers.memory import MemoryProvider
from rotation.run import engine as engine_module
from rotation.run.engine import Engine
from rotation.run.runtime import Runtime
from rotation.run.states import RunState
from rotation.scheduler.dispatcher import Dispatcher
from tests.backends.sql_counter import SqlCounter

POLICY = """
policies:
  - name: keys
    secrets: ["key_*"]
    provider: memory
    kind: random
    schedule: {every: 30d}
    retire_after: 0s
"""
STEP_NAMES = ["create", "apply", "test", "promote", "restart", "retire", "finish"]


@pytest.fixture(params=["postgres", "sqlite"])
def setup(request: pytest.FixtureRequest, tmp_path: Path):
    """Postgres (fused commits, the database's clock) and the embedded SQLite ledger (a
    transaction of statements per commit)."""
    if request.param == "postgres":
        ledger_url = request.getfixturevalue("ledger_url")
    else:
        from rotation.ledger.migrate import upgrade

        ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
        upgrade(ledger_url)
    schedules = tmp_path / "schedules"
    schedules.mkdir()
    (schedules / "p.yaml").write_text(POLICY)
    backend = MemoryProvider()
    backend.write("key_a", "initial")
    runtimes: list[Runtime] = []

    def make(lease: timedelta = timedelta(minutes=5), pause_hook=None):
        runtime = Runtime(Ledger(ledger_url), worker_id="w1", providers={"memory": backend})
        runtimes.append(runtime)
        engine = Engine(runtime, lease=lease, pause_hook=pause_hook)
        report = Dispatcher(runtime, schedules).tick()
        return runtime, engine, report.enqueue

    yield backend, make
    for runtime in runtimes:
        runtime.close()


def _events(runtime: Runtime, run_id: int) -> list[RunEvent]:
    with runtime.ledger.sessions() as session:
        return list(
            session.scalars(select(RunEvent).where(RunEvent.run_id == run_id).order_by(RunEvent.id))
        )


def _run(runtime: Runtime, run_id: int) -> Run:
    with runtime.ledger.sessions() as session:
        run = session.get(Run, run_id)
        assert run is not None
        return run


def test_one_call_runs_the_whole_rotation_one_transaction_per_step(setup, monkeypatch) -> None:
    # a step's setup takes milliseconds; a loaded CI machine must not make a check ask here
    monkeypatch.setattr(engine_module, "LEASE_FRESH_SECONDS", 5.0)
    backend, make = setup
    from rotation.access.audit import verify

    runtime, engine, enqueued = make()
    [(run_id, state)] = enqueued
    counter = SqlCounter(runtime.ledger.engine, active=True)
    outcome = engine.advance(run_id, state, follow=True)
    transactions, statements = counter.transactions, counter.statements
    assert outcome.state is RunState.SUCCEEDED
    assert not outcome.enqueue
    events = _events(runtime, run_id)
    assert [e.step for e in events] == STEP_NAMES
    assert all(e.outcome == "ok" and e.attempt == 1 for e in events)
    assert len(backend.versions("key_a")) == 2  # the value changed exactly once
    if runtime.ledger.dialect == "postgresql":
        # the first lease; a commit per step that carries the next step's lease (one
        # statement); retire's and finish's commits share one transaction (two statements)
        assert (transactions, statements) == (len(STEP_NAMES), len(STEP_NAMES) + 1)
    with runtime.ledger.sessions() as session:
        assert verify(session).ok
    run = _run(runtime, run_id)
    assert run.lease_owner is None and run.lease_expires_at is None


def test_without_follow_a_call_runs_one_step(setup) -> None:
    _, make = setup
    runtime, engine, [(run_id, state)] = make()
    outcome = engine.advance(run_id, state)
    assert outcome.state is RunState.CREATED and outcome.enqueue
    assert _run(runtime, run_id).lease_owner is None


def test_the_chain_stops_once_half_the_budget_is_spent(setup) -> None:
    """Steps of one call share one budget (the Celery task's limits cover one): with less
    than half of it left the next step goes back to the queue, its lease released."""

    def slow_create(step: str, phase: str) -> None:
        if (step, phase) == ("create", "after"):
            time.sleep(0.9)  # of a 1.6 s budget (2 s lease)

    _, make = setup
    runtime, engine, [(run_id, state)] = make(timedelta(seconds=2), slow_create)
    outcome = engine.advance(run_id, state, follow=True)
    assert outcome.state is RunState.CREATED and outcome.enqueue
    run = _run(runtime, run_id)
    assert run.state == "created" and run.lease_owner is None and run.attempt == 0
    outcome = engine.advance(run_id, "created", follow=True)
    while outcome.enqueue and outcome.state is not None:  # a slow machine may stop it again
        outcome = engine.advance(run_id, outcome.state, follow=True)
    assert outcome.state is RunState.SUCCEEDED


def test_a_carried_lease_taken_over_stops_the_chain_before_the_next_action(
    setup, monkeypatch
) -> None:
    """Another worker takes the run over between two steps (as after this one froze past its
    lease): once the ledger's confirmation is older than LEASE_FRESH_SECONDS the fence asks
    again, the step stops before its action and nothing more is committed."""
    monkeypatch.setattr(engine_module, "LEASE_FRESH_SECONDS", 0.05)
    stolen: list[str] = []

    def take_over(step: str, phase: str) -> None:
        if (step, phase) == ("promote", "before") and not stolen:
            with runtime.ledger.transaction() as session:
                session.execute(update(Run).values(lease_owner="w2#intruder"))
            stolen.append(step)
            time.sleep(0.1)

    backend, make = setup
    runtime, engine, [(run_id, state)] = make(pause_hook=take_over)
    outcome = engine.advance(run_id, state, follow=True)
    assert outcome.state is RunState.TESTED and not outcome.enqueue
    assert [e.step for e in _events(runtime, run_id)] == ["create", "apply", "test"]
    assert _run(runtime, run_id).lease_owner == "w2#intruder"
    assert backend.read("key_a").value == "initial"  # promote never ran
