"""The engine and dispatcher against a real Postgres ledger, driven step by step (no Celery here;
tests/integration/test_celery_worker.py runs the same through real worker processes)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from rotation.errors import BackendUnavailable, ConfigurationError
from rotation.ledger.db import Ledger
from rotation.ledger.models import Run, RunEvent, Schedule
from rotation.providers.memory import MemoryProvider
from rotation.run.engine import Engine
from rotation.run.runtime import Runtime
from rotation.run.states import RunState
from rotation.scheduler.dispatcher import Dispatcher
from rotation.scheduler.triggers import rotate_now
from rotation.values import Stage

START = datetime(2026, 1, 5, 3, 0, tzinfo=UTC)  # a Monday


class Clock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


class RejectingIssuer:
    """An issuer hook whose target refuses every new credential (a permanent failure)."""

    def test(self, secret: str, value: object) -> None:
        from rotation.errors import RotationError

        exc = RotationError("the issuer refused the new credential")
        exc.retryable = False  # type: ignore[attr-defined]
        raise exc


rejecting_issuer = RejectingIssuer()


def write_policy(directory: Path, body: str, name: str = "p.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(body)
    return path


BASIC = """
policies:
  - name: api-keys
    secrets: ["api_key_*"]
    provider: memory
    kind: random
    schedule: {every: 1h}
    retire_after: 10m
    max_attempts: 3
"""


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def backend() -> MemoryProvider:
    provider = MemoryProvider()
    provider.write("api_key_ncbi", "initial")
    return provider


@pytest.fixture
def schedules(tmp_path: Path) -> Path:
    write_policy(tmp_path / "schedules", BASIC)
    return tmp_path / "schedules"


_RUNTIMES: list[Runtime] = []


@pytest.fixture(autouse=True)
def _dispose_runtimes():
    yield
    while _RUNTIMES:
        _RUNTIMES.pop().ledger.dispose()


def make(ledger_url: str, backend, clock: Clock, schedules: Path, worker: str = "w1"):
    runtime = Runtime(
        Ledger(ledger_url), clock=clock, worker_id=worker, providers={"memory": backend}
    )
    _RUNTIMES.append(runtime)
    return runtime, Engine(runtime, lease=timedelta(minutes=5)), Dispatcher(runtime, schedules)


def drive(engine: Engine, run_id: int, state: str, clock: Clock, dispatcher: Dispatcher) -> None:
    """Follow the chain of enqueued steps like a worker would, waking waits via the dispatcher."""
    queue = [(run_id, state)]
    for _ in range(100):
        while queue:
            rid, st = queue.pop(0)
            outcome = engine.advance(rid, st)
            if outcome.enqueue and outcome.state is not None:
                queue.append((rid, outcome.state.value))
        with engine.runtime.ledger.sessions() as session:
            run = session.get(Run, run_id)
            assert run is not None
            if RunState(run.state) in (
                RunState.SUCCEEDED,
                RunState.FAILED,
                RunState.NEEDS_ATTENTION,
            ):
                return
            if run.next_attempt_at is not None:
                clock.now = max(clock.now, run.next_attempt_at)
            else:
                clock.advance(seconds=61)
        queue.extend(dispatcher.tick().enqueue)
    raise AssertionError("run did not finish in 100 rounds")


def run_row(ledger_url: str, run_id: int) -> Run:
    ledger = Ledger(ledger_url)
    try:
        with ledger.sessions() as session:
            run = session.get(Run, run_id)
            assert run is not None
            return run
    finally:
        ledger.dispose()


def test_scheduled_rotation_runs_every_step_once(ledger_url, backend, clock, schedules) -> None:
    runtime, engine, dispatcher = make(ledger_url, backend, clock, schedules)
    before = backend.read("api_key_ncbi")
    report = dispatcher.tick()
    assert report.started == 1 and len(report.enqueue) == 1
    run_id, state = report.enqueue[0]
    drive(engine, run_id, state, clock, dispatcher)

    run = run_row(ledger_url, run_id)
    assert run.state == "succeeded" and run.trigger == "schedule"
    assert run.from_version == before.version_id and run.to_version is not None
    assert backend.read("api_key_ncbi").value != "initial"
    assert backend.read("api_key_ncbi", stage=Stage.PREVIOUS).value == "initial"
    assert len(backend.versions("api_key_ncbi")) == 2  # exactly one new version
    with runtime.ledger.sessions() as session:
        steps = session.scalars(
            select(RunEvent.to_state)
            .where(RunEvent.run_id == run_id, RunEvent.outcome == "ok")
            .order_by(RunEvent.id)
        ).all()
        schedule = session.get(Schedule, "api_key_ncbi")
    assert steps == [
        "created",
        "applied",
        "tested",
        "promoted",
        "restarted",
        "retired",
        "succeeded",
    ]
    assert schedule is not None and schedule.last_rotated_at is not None
    assert schedule.next_due_at == schedule.last_rotated_at + timedelta(hours=1)
    # not due again until the interval passed
    assert dispatcher.tick().started == 0
    clock.now = schedule.next_due_at
    assert dispatcher.tick().started == 1


def test_retire_waits_for_grace(ledger_url, backend, clock, schedules) -> None:
    _, engine, dispatcher = make(ledger_url, backend, clock, schedules)
    run_id, state = dispatcher.tick().enqueue[0]
    queue = [(run_id, state)]
    while queue:
        outcome = engine.advance(*queue.pop())
        if outcome.enqueue and outcome.state is not None:
            queue.append((run_id, outcome.state.value))
    run = run_row(ledger_url, run_id)
    assert run.state == "restarted" and run.next_attempt_at == clock.now + timedelta(minutes=10)
    # both old and new valid during the grace: old is PREVIOUS, new is CURRENT
    assert backend.read("api_key_ncbi", stage=Stage.PREVIOUS).value == "initial"
    clock.advance(minutes=5)
    assert dispatcher.tick().enqueue == []
    assert not engine.advance(run_id, "restarted").executed
    clock.advance(minutes=5)
    assert dispatcher.tick().enqueue == [(run_id, "restarted")]


def test_redelivered_message_does_nothing_twice(ledger_url, backend, clock, schedules) -> None:
    _, engine, dispatcher = make(ledger_url, backend, clock, schedules)
    run_id, state = dispatcher.tick().enqueue[0]
    first = engine.advance(run_id, state)
    assert first.executed and first.state is RunState.CREATED
    again = engine.advance(run_id, state)  # the same message delivered again
    assert not again.executed
    pending = [v for v in backend.versions("api_key_ncbi") if Stage.PENDING in v.stages]
    assert len(pending) == 1


def test_live_lease_blocks_a_second_worker(ledger_url, backend, clock, schedules) -> None:
    _, engine, dispatcher = make(ledger_url, backend, clock, schedules)
    _, other, _ = make(ledger_url, backend, clock, schedules, worker="w2")
    run_id, _ = dispatcher.tick().enqueue[0]
    assert engine._take_lease(run_id, None, clock.now)  # w1 holds it (e.g. mid-step)
    assert not other.advance(run_id).executed
    clock.advance(minutes=6)  # w1 died: its lease expires
    assert other.advance(run_id).executed


def test_crash_after_staging_resumes_with_exactly_one_new_version(
    ledger_url, backend, clock, schedules
) -> None:
    _, engine, dispatcher = make(ledger_url, backend, clock, schedules)
    run_id, state = dispatcher.tick().enqueue[0]

    class Crash(BaseException):
        pass

    def crash_after(step: str, phase: str) -> None:
        if (step, phase) == ("create", "after"):
            raise Crash

    engine.pause_hook = crash_after
    with pytest.raises(Crash):
        engine.advance(run_id, state)  # pending staged, transition never committed
    engine.pause_hook = None
    assert run_row(ledger_url, run_id).state == "pending"
    clock.advance(minutes=6)
    recovered = dispatcher.tick().enqueue
    assert recovered == [(run_id, "pending")]
    drive(engine, run_id, "pending", clock, dispatcher)
    assert run_row(ledger_url, run_id).state == "succeeded"
    assert len(backend.versions("api_key_ncbi")) == 2


def test_two_dispatchers_at_once_start_one_run(ledger_url, backend, clock, schedules) -> None:
    dispatchers = [make(ledger_url, backend, clock, schedules, worker=f"b{i}")[2] for i in range(4)]
    barrier = threading.Barrier(len(dispatchers))
    started: list[int] = []
    errors: list[BaseException] = []

    def beat(dispatcher: Dispatcher) -> None:
        try:
            barrier.wait()
            for _ in range(5):
                started.extend(r for r, s in dispatcher.tick().enqueue if s == "pending")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=beat, args=(d,)) for d in dispatchers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(started) == 1
    ledger = Ledger(ledger_url)
    with ledger.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 1
    ledger.dispose()


class FailingProvider(MemoryProvider):
    """Every call fails, as a backend that is down."""

    def __init__(self, inner: MemoryProvider) -> None:
        super().__init__()
        self.inner = inner
        self.failing = False

    def _view(self, read, name=None):  # type: ignore[override]
        if self.failing:
            raise BackendUnavailable("the backend is down (test)")
        return self.inner._view(read)

    def _mutate(self, change, name=None):  # type: ignore[override]
        if self.failing:
            raise BackendUnavailable("the backend is down (test)")
        return self.inner._mutate(change)


def test_backend_down_ends_in_needs_attention(ledger_url, backend, clock, schedules) -> None:
    failing = FailingProvider(backend)
    _, engine, dispatcher = make(ledger_url, failing, clock, schedules)
    run_id, state = dispatcher.tick().enqueue[0]
    failing.failing = True
    drive(engine, run_id, state, clock, dispatcher)
    run = run_row(ledger_url, run_id)
    assert run.state == "needs_attention"
    assert "BackendUnavailable" in (run.last_error or "")
    assert backend.read("api_key_ncbi").value == "initial"  # current still works
    assert not [v for v in backend.versions("api_key_ncbi") if Stage.PENDING in v.stages]
    ledger = Ledger(ledger_url)
    with ledger.sessions() as session:
        tries = session.scalars(
            select(RunEvent.outcome).where(RunEvent.run_id == run_id).order_by(RunEvent.id)
        ).all()
        schedule = session.get(Schedule, "api_key_ncbi")
    ledger.dispose()
    assert tries == ["retry", "retry", "failed"]  # max_attempts = 3
    assert schedule is not None and schedule.next_due_at is None  # blocked until a human acts
    assert dispatcher.tick().started == 0


def test_rejected_credential_rolls_back_and_fails(ledger_url, backend, clock, tmp_path) -> None:
    schedules = write_policy(
        tmp_path / "s",
        BASIC.replace(
            "kind: random",
            "kind: random\n    target: {issuer: 'tests.integration.test_engine:rejecting_issuer'}",
        ),
    ).parent
    _, engine, dispatcher = make(ledger_url, backend, clock, schedules)
    run_id, state = dispatcher.tick().enqueue[0]
    drive(engine, run_id, state, clock, dispatcher)
    run = run_row(ledger_url, run_id)
    assert run.state == "failed"
    assert "refused" in (run.last_error or "") and "pending value was discarded" in run.last_error
    assert backend.read("api_key_ncbi").value == "initial"
    assert len(backend.versions("api_key_ncbi")) == 1


def test_rotate_now_never_starts_a_second_run(ledger_url, backend, clock, schedules) -> None:
    runtime, _engine, dispatcher = make(ledger_url, backend, clock, schedules)
    dispatcher.sync_policies(clock.now)
    first = rotate_now(runtime, "api_key_ncbi", actor="alice")
    second = rotate_now(runtime, "api_key_ncbi", actor="bob")
    assert first.created and not second.created and first.run_id == second.run_id
    assert dispatcher.tick().started == 0  # the schedule is held by the manual run
    with pytest.raises(ConfigurationError, match="No rotation policy governs"):
        rotate_now(runtime, "unknown_secret", actor="alice")


def test_rotate_now_since_answers_a_run_that_succeeded_since_then(
    ledger_url, backend, clock, schedules
) -> None:
    """``rotate-all --since``: the worker decides per secret, after the active-run check, so a
    run that ends between the operator's two commands is skipped, not rotated again."""
    runtime, engine, dispatcher = make(ledger_url, backend, clock, schedules)
    dispatcher.sync_policies(clock.now)
    began = clock.now
    first = rotate_now(runtime, "api_key_ncbi", actor="alice", since=began)
    assert first.created
    during = rotate_now(runtime, "api_key_ncbi", actor="alice", since=began)
    assert (during.run_id, during.created) == (first.run_id, False)  # active: kept
    drive(engine, first.run_id, "pending", clock, dispatcher)
    after = rotate_now(runtime, "api_key_ncbi", actor="alice", since=began)
    assert (after.run_id, after.created, after.state) == (first.run_id, False, "succeeded")
    fresh = rotate_now(runtime, "api_key_ncbi", actor="alice", since=clock.now)
    assert fresh.created and fresh.run_id != first.run_id  # nothing since then: a new run


def test_window_defers_start(ledger_url, backend, clock, tmp_path) -> None:
    body = BASIC.replace(
        "schedule: {every: 1h}", 'schedule: {every: 1h}\n    window: {start: "05:00", end: "06:00"}'
    )
    schedules = write_policy(tmp_path / "w", body).parent
    _, _, dispatcher = make(ledger_url, backend, clock, schedules)
    assert dispatcher.tick().started == 0  # 03:00: due, but the window opens at 05:00
    clock.now = START.replace(hour=4, minute=59)
    assert dispatcher.tick().started == 0
    clock.now = START.replace(hour=5, minute=0)
    assert dispatcher.tick().started == 1


def test_invalid_file_keeps_serving_valid_policies(ledger_url, backend, clock, tmp_path) -> None:
    schedules = write_policy(tmp_path / "m", BASIC)
    write_policy(schedules.parent, "policies:\n  - name: broken\n    kind: nope\n", "bad.yaml")
    _, _, dispatcher = make(ledger_url, backend, clock, schedules.parent)
    report = dispatcher.tick()
    assert report.started == 1
    assert report.errors and all("bad.yaml" in str(e) for e in report.errors)


def test_manual_triggers_check_roles_and_audit_denials(
    ledger_url, backend, clock, schedules, monkeypatch
) -> None:
    from rotation.access import audit, roles
    from rotation.errors import PermissionDenied
    from rotation.ledger.models import AuditRecord
    from rotation.scheduler.triggers import rotate_all

    runtime, _, dispatcher = make(ledger_url, backend, clock, schedules)
    dispatcher.sync_policies(clock.now)
    monkeypatch.setenv("KEYTURN_DATABASE_URL", ledger_url)
    monkeypatch.setenv("KEYTURN_AUDIT", "ledger")
    audit.reset_default_sink()
    roles.configure({"alice": "viewer", "olivia": "operator"})
    try:
        with pytest.raises(PermissionDenied, match="alice"):
            rotate_now(runtime, "api_key_ncbi", actor="alice")
        with pytest.raises(PermissionDenied, match="rotate_all"):
            rotate_all(runtime, "api_key", actor="olivia")  # operators rotate one at a time
        assert rotate_now(runtime, "api_key_ncbi", actor="olivia").created
    finally:
        roles.reset()
        audit.reset_default_sink()
    with runtime.ledger.sessions() as session:
        denials = session.scalars(
            select(AuditRecord.actor).where(AuditRecord.action == "permission.denied")
        ).all()
        started = session.scalars(select(Run.actor)).all()
    assert sorted(denials) == ["alice", "olivia"]
    assert started == ["olivia"]


def test_a_racing_manual_run_does_not_stop_the_others(ledger_url, clock, tmp_path) -> None:
    backend = MemoryProvider()
    for name in ("api_key_a", "api_key_b", "api_key_c"):
        backend.write(name, "initial")
    schedules = write_policy(tmp_path / "s", BASIC)
    runtime, _, dispatcher = make(ledger_url, backend, clock, schedules.parent)
    dispatcher.sync_policies(clock.now)
    # a manual run that slipped in between the claim and the insert: its schedule still says due
    from rotation.ledger.models import PolicyRow
    from rotation.scheduler.dispatcher import pending_run

    with runtime.ledger.transaction() as session:
        row = session.get(PolicyRow, "api-keys")
        assert row is not None
        session.add(
            pending_run(
                secret="api_key_b",
                policy_row=row,
                policy=runtime.policy(row),
                trigger="manual",
                actor="alice",
                now=clock.now,
            )
        )
    report = dispatcher.tick()
    assert report.started == 2
    with runtime.ledger.sessions() as session:
        active = session.execute(select(Run.secret, Run.trigger).order_by(Run.secret)).all()
    assert active == [("api_key_a", "schedule"), ("api_key_b", "manual"), ("api_key_c", "schedule")]


def test_rotate_now_adopts_a_secret_created_since_the_last_listing(
    ledger_url, backend, clock, schedules
) -> None:
    from rotation.errors import SecretNotFound

    runtime, engine, dispatcher = make(ledger_url, backend, clock, schedules)
    dispatcher.sync_policies(clock.now)
    backend.write("api_key_new", "initial")  # the glob re-listing has not seen it yet
    triggered = rotate_now(runtime, "api_key_new", actor="alice")
    assert triggered.created
    drive(engine, triggered.run_id, triggered.state, clock, dispatcher)
    assert run_row(ledger_url, triggered.run_id).state == "succeeded"
    with runtime.ledger.sessions() as session:
        schedule = session.get(Schedule, "api_key_new")
    assert schedule is not None and schedule.policy_name == "api-keys"
    assert schedule.next_due_at == schedule.last_rotated_at + timedelta(hours=1)
    with pytest.raises(SecretNotFound):
        rotate_now(runtime, "api_key_never_created", actor="alice")
    with pytest.raises(ConfigurationError, match="No rotation policy governs"):
        rotate_now(runtime, "db_password", actor="alice")


def test_a_run_whose_policy_went_missing_goes_on_until_the_removal_is_confirmed(
    ledger_url, backend, clock, schedules
) -> None:
    _, engine, dispatcher = make(ledger_url, backend, clock, schedules)
    run_id, state = dispatcher.tick().enqueue[0]
    (schedules / "p.yaml").unlink()
    clock.advance(minutes=10)  # past the glob refresh, so the sync runs: missing, not removed
    dispatcher.tick()
    outcome = engine.advance(run_id, state)
    assert outcome.state is RunState.CREATED
    clock.advance(minutes=20)  # missing for 20 minutes: removed (grace 15 minutes)
    dispatcher.tick()
    outcome = engine.advance(run_id, "created")
    assert outcome.state is RunState.FAILED
    run = run_row(ledger_url, run_id)
    assert "policy 'api-keys' was removed; rolled back" in (run.last_error or "")
    assert backend.read("api_key_ncbi").value == "initial"


def test_embedded_sqlite_ledger_rotates_with_the_database_clock(tmp_path: Path) -> None:
    """The embedded ledger (SQLite: no fused commit, times passed in): every step keeps its
    lease to the end, the run succeeds, the schedule moves on and the audit chain holds."""
    from rotation.access.audit import verify
    from rotation.ledger.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    upgrade(url)
    backend = MemoryProvider()
    backend.write("api_key_ncbi", "initial")
    runtime = Runtime(Ledger(url), worker_id="w1", providers={"memory": backend})
    _RUNTIMES.append(runtime)
    engine = Engine(runtime, lease=timedelta(minutes=5))
    write_policy(tmp_path / "schedules", BASIC.replace("retire_after: 10m", "retire_after: 0s"))
    queue = list(Dispatcher(runtime, tmp_path / "schedules").tick().enqueue)
    assert len(queue) == 1
    while queue:
        run_id, state = queue.pop(0)
        outcome = engine.advance(run_id, state)
        assert outcome.executed, f"step from {state} did not run"
        if outcome.enqueue and outcome.state is not None:
            queue.append((run_id, outcome.state.value))
    with runtime.ledger.sessions() as session:
        run = session.scalars(select(Run)).one()
        schedule = session.get(Schedule, "api_key_ncbi")
        assert verify(session).ok
    assert run.state == RunState.SUCCEEDED.value
    assert schedule is not None and schedule.last_rotated_at is not None
    assert schedule.next_due_at is not None and schedule.next_due_at > schedule.last_rotated_at
    assert backend.read("api_key_ncbi").value != "initial"


def test_recovery_trickles_while_workers_move_runs(ledger_url, clock, schedules) -> None:
    """A stale run is sent again oldest first; while workers are moving runs (a backlog
    draining) only ``busy_batch`` per tick, so duplicates cannot crowd out the work; once
    nothing moves, the rest."""
    backend = MemoryProvider()
    for name in ("a", "b", "c", "d"):
        backend.write(f"api_key_{name}", "initial")
    runtime, engine, _ = make(ledger_url, backend, clock, schedules)
    dispatcher = Dispatcher(runtime, schedules, busy_batch=2)
    assert len(dispatcher.tick().enqueue) == 4
    with runtime.ledger.transaction() as session:
        runs = {r.secret[-1]: r for r in session.scalars(select(Run))}
        for offset, name in enumerate("dcba"):  # a was sent last
            runs[name].enqueued_at = START + timedelta(seconds=10 * offset)
        ids = {name: run.id for name, run in runs.items()}
    clock.now = START + timedelta(seconds=100)
    assert engine.advance(ids["a"], "pending").executed  # a worker moves a run
    clock.now = START + timedelta(seconds=110)  # b, c, d stale (sent 70 s ago and more)
    assert set(dispatcher.recover_stalled(clock.now)) == {ids["d"], ids["c"]}  # oldest two
    clock.now = START + timedelta(hours=1)  # nothing moved for longer than the window
    assert ids["b"] in dispatcher.recover_stalled(clock.now)
