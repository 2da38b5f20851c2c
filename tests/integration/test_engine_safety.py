"""Engine safety (issue 11) against a real Postgres ledger, in-process: a step that lost its
lease stops, steps are bounded in time, setup errors are attempts, the retire guard survives a
crash after ``create``, policies that vanish for a tick keep their history, and a run that needs
attention can be resolved. The real-process cases (SIGSTOP, a worker clock minutes ahead) are in
tests/faults/test_leases.py."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from rotation.ledger.db import Ledger
from rotation.ledger.models import PolicyRow, Run, RunEvent, Schedule
from rotation.ops.operations import Thresholds, status_rows
from rotation.providers.memory import MemoryProvider
from rotation.run.engine import Engine
from rotation.run.runtime import Runtime
from rotation.run.states import RunState
from rotation.scheduler.dispatcher import Dispatcher
from rotation.values import Stage
from tests.integration.test_engine import (
    _RUNTIMES,
    BASIC,
    Clock,
    clock,
    drive,
    make,
    run_row,
    write_policy,
)

__all__ = ["clock"]

FINAL = ("succeeded", "failed", "needs_attention")


def one_secret_policy(restart: str = "{strategy: none}", extra: str = "") -> str:
    return f"""
policies:
  - name: svc
    secret: svc/key
    provider: memory
    kind: random
    schedule: {{every: 30d}}
    retire_after: 0s
    max_attempts: 3
    restart: {restart}
{extra}"""


@pytest.fixture
def svc_backend() -> MemoryProvider:
    provider = MemoryProvider()
    provider.write("svc/key", "initial")
    return provider


def advance_to(engine: Engine, run_id: int, state: RunState) -> None:
    """Advance in-process until the run is in ``state`` (no waits on the way)."""
    for _ in range(10):
        run = run_row(engine.runtime.ledger.url, run_id)
        if run.state == state.value:
            return
        assert engine.advance(run_id, run.state).executed, run.state
    raise AssertionError(f"run {run_id} never reached {state}")


def events(ledger_url: str, run_id: int) -> list[tuple[str, str, str]]:
    ledger = Ledger(ledger_url)
    try:
        with ledger.sessions() as session:
            return [
                (e.step, e.to_state, e.outcome)
                for e in session.scalars(
                    select(RunEvent).where(RunEvent.run_id == run_id).order_by(RunEvent.id)
                )
            ]
    finally:
        ledger.dispose()


# --- finding 1: a step never outlives its lease ---------------------------------------------------


def test_a_worker_that_lost_its_lease_runs_no_further_command_and_commits_nothing(
    ledger_url, svc_backend, clock, tmp_path
) -> None:
    """Worker A is stuck in its first restart command past its lease; worker B takes over and
    runs the three commands. When A wakes up it runs none of the remaining commands and commits
    nothing: each command ran once per lease holder that started it, never more."""
    log, first, go = tmp_path / "commands.log", tmp_path / "first", tmp_path / "go"
    hold = (
        f"echo 1 >> {log}; if [ ! -e {first} ]; then touch {first}; "
        f"i=0; while [ ! -e {go} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; fi"
    )
    restart = (
        f"{{strategy: command, timeout: 30s, commands: "
        f"[[sh, -c, '{hold}'], [sh, -c, 'echo 2 >> {log}'], [sh, -c, 'echo 3 >> {log}']]}}"
    )
    schedules = write_policy(tmp_path / "s", one_secret_policy(restart)).parent
    _, engine_a, dispatcher = make(ledger_url, svc_backend, clock, schedules, worker="a")
    _, engine_b, _ = make(ledger_url, svc_backend, clock, schedules, worker="b")
    run_id, _ = dispatcher.tick().enqueue[0]
    advance_to(engine_a, run_id, RunState.PROMOTED)

    outcome: list[object] = []
    stuck = threading.Thread(target=lambda: outcome.append(engine_a.advance(run_id, "promoted")))
    stuck.start()
    deadline = time.monotonic() + 20
    while not first.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.exists(), "worker A never started its first command"

    clock.advance(minutes=6)  # A's lease (5 min) expired while it was stuck
    taken_over = engine_b.advance(run_id, "promoted")
    assert taken_over.executed and taken_over.state is RunState.RESTARTED
    go.touch()  # A wakes up
    stuck.join(30)
    assert not stuck.is_alive()

    assert log.read_text().split() == ["1", "1", "2", "3"]  # A: 1; B: 1, 2, 3
    assert run_row(ledger_url, run_id).state == "restarted"
    restart_events = [e for e in events(ledger_url, run_id) if e[0] == "restart"]
    assert restart_events == [("restart", "restarted", "ok")]  # only B committed


def test_a_step_is_cut_off_at_its_budget_well_inside_the_lease(
    ledger_url, svc_backend, clock, tmp_path
) -> None:
    """A worker whose lease is 5 s cuts a restart command off at its step budget, although the
    policy (checked against a 5-minute lease) allows 30 s: the step ends before the lease."""
    restart = "{strategy: command, timeout: 30s, commands: [[sleep, '8']]}"
    schedules = write_policy(tmp_path / "s", one_secret_policy(restart)).parent
    runtime, _, dispatcher = make(ledger_url, svc_backend, clock, schedules)
    engine = Engine(runtime, lease=timedelta(seconds=5))
    run_id, _ = dispatcher.tick().enqueue[0]
    advance_to(engine, run_id, RunState.PROMOTED)
    started = time.monotonic()
    outcome = engine.advance(run_id, "promoted")
    elapsed = time.monotonic() - started
    assert outcome.executed
    assert elapsed < 5.0, f"the restart step ran {elapsed:.1f} s against a 5 s lease"
    run = run_row(ledger_url, run_id)
    assert run.state == "promoted" and run.next_attempt_at is not None  # a retry, later
    assert "budget" in (run.last_error or "")
    print(f"restart step cut off after {elapsed:.2f} s (lease 5 s, budget 4 s, command 8 s)")


def test_a_rollback_after_the_budget_ran_out_gets_a_budget_of_its_own(
    ledger_url, svc_backend, clock, tmp_path
) -> None:
    """The last try of the restart is cut off at the step budget; the rollback is a step of its
    own (``rolling_back``), under a new lease with a budget of its own, so its backend write
    completes. Its announcement (the same command) is cut off too: it stops, with the previous
    version current and nothing revoked."""
    restart = "{strategy: command, timeout: 30s, retry_for: 1s, commands: [[sleep, '8']]}"
    schedules = write_policy(tmp_path / "s", one_secret_policy(restart)).parent
    runtime, _, dispatcher = make(ledger_url, svc_backend, clock, schedules)
    engine = Engine(runtime, lease=timedelta(seconds=5))
    run_id, _ = dispatcher.tick().enqueue[0]
    advance_to(engine, run_id, RunState.PROMOTED)
    clock.advance(seconds=2)  # retry_for (1s) is spent: this try is the last one
    outcome = engine.advance(run_id, "promoted")
    assert outcome.state is RunState.ROLLING_BACK and outcome.enqueue
    assert "StepBudgetExceeded" in (run_row(ledger_url, run_id).last_error or "")
    restored = engine.advance(run_id, "rolling_back")  # a new lease: restore fits its budget
    assert restored.state is RunState.ROLLING_BACK and restored.enqueue
    assert svc_backend.read("svc/key").value == "initial"
    clock.advance(seconds=2)
    stopped = engine.advance(run_id, "rolling_back")  # the announcement is cut off as well
    assert stopped.state is RunState.NEEDS_ATTENTION
    run = run_row(ledger_url, run_id)
    assert "rollback stopped: StepBudgetExceeded" in (run.last_error or "")
    assert "the previous version is current again" in (run.last_error or "")
    assert svc_backend.read("svc/key").value == "initial"


def test_each_restart_wave_is_a_step_with_its_own_budget(
    ledger_url, svc_backend, clock, tmp_path
) -> None:
    """Two waves of 3 s each under a 5 s lease (budget 4 s): each wave commits its progress and
    the next runs under a new lease, so the restart succeeds although it takes 6 s in all."""
    wave = "{strategy: command, timeout: 4s, commands: [[sleep, '3']]}"
    restart = f"{{strategy: waves, waves: [{wave}, {wave}]}}"
    schedules = write_policy(tmp_path / "s", one_secret_policy(restart)).parent
    runtime, _, dispatcher = make(ledger_url, svc_backend, clock, schedules)
    engine = Engine(runtime, lease=timedelta(seconds=5))
    run_id, _ = dispatcher.tick().enqueue[0]
    advance_to(engine, run_id, RunState.PROMOTED)
    first = engine.advance(run_id, "promoted")
    assert first.state is RunState.PROMOTED and first.enqueue  # wave 1 done: go on at once
    second = engine.advance(run_id, "promoted")
    assert second.state is RunState.RESTARTED
    restart_events = [e for e in events(ledger_url, run_id) if e[0] == "restart"]
    assert restart_events == [("restart", "promoted", "wait"), ("restart", "restarted", "ok")]


def test_target_sql_gives_up_on_a_lock_instead_of_waiting(pg_database) -> None:
    """``ALTER ROLE`` on a role another session holds locked fails within the lock timeout
    (retryably), instead of waiting as long as the other session holds the lock."""
    import psycopg
    from psycopg import sql

    from rotation.errors import TargetRejected
    from rotation.generator import GeneratorPolicy
    from rotation.rotators.base import RotationContext
    from rotation.rotators.postgres.rotator import PostgresRotator

    role = pg_database.alternating_pair("locked", "initial-password-1")
    provider = MemoryProvider()
    provider.write("db/admin", pg_database.admin_secret)
    provider.write("db/app", pg_database.credential(role, "initial-password-1"))
    ctx = RotationContext(
        secret="db/app",
        provider=provider,
        token="t1",
        generator=GeneratorPolicy(),
        target={"mode": "alternating", "admin_secret": "db/admin"},
        read_secret=lambda name: provider.read(name).value,
    )
    rotator = PostgresRotator()
    provider.stage_pending("db/app", rotator.create(ctx, provider.read("db/app").value), token="t1")
    rotator.apply(ctx)  # creates the clone role
    blocker = pg_database.admin_connect()
    try:
        blocker.autocommit = False
        blocker.execute(
            sql.SQL("ALTER ROLE {} CONNECTION LIMIT 7").format(sql.Identifier(role + "_clone"))
        )  # holds the role's row lock until the transaction ends
        release = threading.Timer(25, blocker.rollback)
        release.start()
        started = time.monotonic()
        with pytest.raises(TargetRejected) as caught:
            rotator.apply(ctx)
        elapsed = time.monotonic() - started
        release.cancel()
    finally:
        try:
            blocker.rollback()
        except psycopg.Error:
            pass
        blocker.close()
    assert elapsed < 12, f"ALTER ROLE waited {elapsed:.1f} s on the lock"
    print(f"ALTER ROLE gave up after {elapsed:.2f} s on a lock held 25 s")
    assert caught.value.retryable and caught.value.sqlstate == "55P03"


# --- finding 3: setup errors are attempts; stall detection looks at progress ----------------------


def test_a_provider_that_cannot_be_built_ends_in_needs_attention(
    ledger_url, clock, tmp_path
) -> None:
    body = one_secret_policy().replace("provider: memory", "provider: vault")
    schedules = write_policy(tmp_path / "s", body).parent
    # no VAULT_ADDR in this worker's environment: the vault provider cannot be built
    runtime = Runtime(Ledger(ledger_url), clock=clock, worker_id="w1", environ={})
    _RUNTIMES.append(runtime)
    engine, dispatcher = Engine(runtime), Dispatcher(runtime, schedules)
    run_id, _ = dispatcher.tick().enqueue[0]
    raised: list[str] = []
    for _ in range(12):
        try:
            engine.advance(run_id, "pending")
        except Exception as exc:  # the bug: the error escaped the step's handling
            raised.append(type(exc).__name__)
        run = run_row(ledger_url, run_id)
        if run.state in FINAL:
            break
        clock.advance(minutes=11)  # past any backoff and any lease
    run = run_row(ledger_url, run_id)
    assert not raised, f"advance raised {raised}; run {run.state}, attempt {run.attempt}"
    assert run.state == "needs_attention", (run.state, run.attempt, run.last_error)
    assert run.attempt <= run.max_attempts
    assert "VAULT_ADDR" in (run.last_error or "")
    outcomes = [e[2] for e in events(ledger_url, run_id)]
    assert outcomes == ["retry", "retry", "failed"]


def test_status_sees_a_run_stalled_despite_fresh_lease_takes(
    ledger_url, svc_backend, clock, tmp_path
) -> None:
    """A run whose lease keeps being taken (``updated_at`` fresh) but which records no event is
    stalled: progress is the last event, not the last lease take."""
    schedules = write_policy(tmp_path / "s", one_secret_policy()).parent
    runtime, engine, dispatcher = make(ledger_url, svc_backend, clock, schedules)
    run_id, _ = dispatcher.tick().enqueue[0]
    assert engine.advance(run_id, "pending").executed  # one event: created
    clock.advance(hours=2)
    with runtime.ledger.transaction() as session:  # lease takes without progress
        session.execute(update(Run).where(Run.id == run_id).values(updated_at=clock.now))
    thresholds = Thresholds(tolerance=timedelta(minutes=5), stall_after=timedelta(minutes=11))
    (row,) = status_rows(runtime, clock.now, thresholds)
    assert row.problem == "stalled", row
    assert row.late is not None and row.late >= timedelta(hours=2)


# --- finding 4: the retire guard survives a crash right after create ----------------------------


class RecordingIssuer:
    """An issuer hook that records the values it was asked to retire."""

    def __init__(self) -> None:
        self.retired: list[object] = []

    def retire(self, secret: str, old: object) -> None:
        self.retired.append(old)


recording_issuer = RecordingIssuer()


def test_a_crash_after_create_keeps_the_retire_guard(ledger_url, clock, tmp_path) -> None:
    recording_issuer.retired.clear()
    backend = MemoryProvider()
    backend.write("svc/key", "initial")
    initial = backend.read("svc/key").version_id
    target = "    target: {issuer: 'tests.integration.test_engine_safety:recording_issuer'}\n"
    body = one_secret_policy(extra=target).replace("retire_after: 0s", "retire_after: 10m")
    schedules = write_policy(tmp_path / "s", body).parent
    _, engine, dispatcher = make(ledger_url, backend, clock, schedules)
    run_id, _ = dispatcher.tick().enqueue[0]

    class Crash(BaseException):
        pass

    def crash_after_create(step: str, phase: str) -> None:
        if (step, phase) == ("create", "after"):
            raise Crash

    engine.pause_hook = crash_after_create
    with pytest.raises(Crash):
        engine.advance(run_id, "pending")
    engine.pause_hook = None
    clock.advance(minutes=6)  # the lease expired; the re-run finds the pending value staged
    advance_to(engine, run_id, RunState.RESTARTED)
    assert run_row(ledger_url, run_id).from_version == initial

    ours = backend.read("svc/key").value
    backend.write("svc/key", "written-by-hand")  # during the grace; ours becomes previous
    assert backend.read("svc/key", stage=Stage.PREVIOUS).value == ours
    drive(engine, run_id, "restarted", clock, dispatcher)
    run = run_row(ledger_url, run_id)
    assert run.state == "succeeded"
    assert ours not in recording_issuer.retired  # the run's own value was left alone
    assert recording_issuer.retired == []


# --- finding 5: a policy that disappears for a tick keeps its history ----------------------------


def rotate_once(engine: Engine, dispatcher: Dispatcher, clock: Clock, ledger_url: str) -> int:
    report = dispatcher.tick()
    (run_id, state) = report.enqueue[0]
    drive(engine, run_id, state, clock, dispatcher)
    assert run_row(ledger_url, run_id).state == "succeeded"
    return run_id


def schedule_of(ledger_url: str, secret: str) -> Schedule | None:
    ledger = Ledger(ledger_url)
    try:
        with ledger.sessions() as session:
            return session.get(Schedule, secret)
    finally:
        ledger.dispose()


def test_a_policy_file_renamed_for_one_tick_keeps_its_schedule(
    ledger_url, svc_backend, clock, tmp_path
) -> None:
    path = write_policy(tmp_path / "s", one_secret_policy())
    _, engine, dispatcher = make(ledger_url, svc_backend, clock, path.parent)
    rotate_once(engine, dispatcher, clock, ledger_url)
    before = schedule_of(ledger_url, "svc/key")
    assert before is not None and before.last_rotated_at is not None

    clock.advance(days=1)
    moved = path.rename(path.with_suffix(".yaml.bak"))  # renamed away for one tick
    dispatcher.tick()
    moved.rename(path)
    clock.advance(seconds=5)
    assert dispatcher.tick().started == 0  # not "never rotated": nothing is due
    after = schedule_of(ledger_url, "svc/key")
    assert after is not None
    assert after.last_rotated_at == before.last_rotated_at
    assert after.next_due_at == before.last_rotated_at + timedelta(days=30)


def test_a_short_glob_listing_never_removes_schedules(ledger_url, clock, tmp_path) -> None:
    class ShortListing(MemoryProvider):
        short = False

        def list(self, prefix: str = "") -> list[str]:
            names = super().list(prefix)
            return names[:1] if self.short else names

    backend = ShortListing()
    for name in ("api_key_a", "api_key_b", "api_key_c"):
        backend.write(name, "initial")
    schedules = write_policy(tmp_path / "s", BASIC).parent
    _, _, dispatcher = make(ledger_url, backend, clock, schedules)
    dispatcher.sync_policies(clock.now)
    backend.short = True
    for _ in range(5):  # past the glob refresh, and past any removal grace
        clock.advance(hours=1)
        dispatcher.tick()
    for name in ("api_key_a", "api_key_b", "api_key_c"):
        schedule = schedule_of(ledger_url, name)
        assert schedule is not None, f"{name}'s schedule was removed"
        assert getattr(schedule, "removed_at", None) is None


def test_a_run_of_a_removed_policy_rolls_back_cleanly(
    ledger_url, svc_backend, clock, tmp_path
) -> None:
    path = write_policy(tmp_path / "s", one_secret_policy())
    _, engine, dispatcher = make(ledger_url, svc_backend, clock, path.parent)
    run_id, _ = dispatcher.tick().enqueue[0]
    advance_to(engine, run_id, RunState.CREATED)  # a pending value is staged
    path.unlink()
    for _ in range(3):  # the removal is confirmed after its grace
        clock.advance(minutes=10)
        dispatcher.tick()
    outcome = engine.advance(run_id, "created")
    assert outcome.state is RunState.FAILED
    run = run_row(ledger_url, run_id)
    assert "removed" in (run.last_error or "") and "rolled back" in (run.last_error or "")
    assert svc_backend.read("svc/key").value == "initial"
    assert not [v for v in svc_backend.versions("svc/key") if Stage.PENDING in v.stages]


def test_a_run_of_a_removed_policy_finishes_after_promotion(
    ledger_url, svc_backend, clock, tmp_path
) -> None:
    path = write_policy(tmp_path / "s", one_secret_policy())
    _, engine, dispatcher = make(ledger_url, svc_backend, clock, path.parent)
    run_id, _ = dispatcher.tick().enqueue[0]
    advance_to(engine, run_id, RunState.PROMOTED)
    path.unlink()
    for _ in range(3):
        clock.advance(minutes=10)
        dispatcher.tick()
    drive(engine, run_id, "promoted", clock, dispatcher)
    run = run_row(ledger_url, run_id)
    assert run.state == "succeeded"
    assert svc_backend.read("svc/key").token == run.token


def test_a_confirmed_removal_keeps_history_and_a_return_restores_it(
    ledger_url, svc_backend, clock, tmp_path
) -> None:
    path = write_policy(tmp_path / "s", one_secret_policy())
    runtime, engine, dispatcher = make(ledger_url, svc_backend, clock, path.parent)
    rotate_once(engine, dispatcher, clock, ledger_url)
    rotated = schedule_of(ledger_url, "svc/key")
    assert rotated is not None
    text = path.read_text()
    path.unlink()
    for _ in range(3):
        clock.advance(minutes=10)
        dispatcher.tick()
    removed = schedule_of(ledger_url, "svc/key")
    assert removed is not None and removed.removed_at is not None  # soft-removed, kept
    assert removed.last_rotated_at == rotated.last_rotated_at
    thresholds = Thresholds(tolerance=timedelta(minutes=5), stall_after=timedelta(minutes=11))
    assert status_rows(runtime, clock.now, thresholds) == []  # not governed: not shown
    clock.advance(days=40)
    assert dispatcher.tick().started == 0  # a removed schedule is never due

    path.write_text(text)
    clock.advance(seconds=5)
    report = dispatcher.tick()
    back = schedule_of(ledger_url, "svc/key")
    assert back is not None and back.removed_at is None
    assert back.last_rotated_at == rotated.last_rotated_at
    assert report.started == 1  # 40 days after its last rotation it is due, once
    with runtime.ledger.sessions() as session:
        row = session.get(PolicyRow, "svc")
        assert row is not None and row.removed_at is None


# --- the dispatcher's last tick -------------------------------------------------------------------


def test_every_tick_records_itself_in_database_time(ledger_url, svc_backend, tmp_path) -> None:
    from rotation.ledger.ticks import last_tick

    schedules = write_policy(tmp_path / "s", one_secret_policy()).parent
    runtime = Runtime(Ledger(ledger_url), worker_id="beat-1", providers={"memory": svc_backend})
    _RUNTIMES.append(runtime)
    dispatcher = Dispatcher(runtime, schedules)
    assert last_tick(runtime.ledger) is None
    dispatcher.tick()
    first = last_tick(runtime.ledger)
    assert first is not None
    db_now = runtime.ledger.now()
    assert timedelta(0) <= db_now - first.at < timedelta(seconds=5)
    assert first.by == "beat-1"
    dispatcher.tick()
    second = last_tick(runtime.ledger)
    assert second is not None and second.at > first.at


def test_the_default_clock_is_the_database(ledger_url) -> None:
    runtime = Runtime(Ledger(ledger_url))
    _RUNTIMES.append(runtime)
    with runtime.ledger.sessions() as session:
        from sqlalchemy import text

        db_now = session.execute(text("SELECT clock_timestamp()")).scalar_one()
    assert abs((runtime.clock() - db_now).total_seconds()) < 2
    assert runtime.clock == runtime.ledger.now
