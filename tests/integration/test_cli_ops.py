"""The everyday CLI (status, rotate, runs, history, plan, rollback, secrets) against a real
Postgres ledger and the local store; runs are put in given states by an in-process engine, the
CLI's signed requests are served in-process by the workers' handler (``served``), and
``rotate --wait`` follows a run done by real Celery workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select, update

from rotation.access.requests import generate_key_pair
from rotation.cli import main, tasks
from rotation.ledger.db import Ledger
from rotation.ledger.models import PolicyRow, Run, RunEvent, Schedule
from rotation.ops.manual import handle
from rotation.providers.local import LocalProvider, generate_key
from rotation.run.engine import Engine
from rotation.run.runtime import Runtime
from rotation.run.states import RunState
from rotation.scheduler.dispatcher import Dispatcher
from rotation.scheduler.tasks import MANUAL
from rotation.scheduler.triggers import rotate_now
from tests.integration.test_celery_worker import BROKER, REPO, Cluster

POLICIES = """
policies:
  - name: fast
    secret: svc/fast
    kind: random
    schedule: {every: 30d}
    retire_after: 0s
  - name: slow
    secret: svc/slow
    kind: random
    schedule: {every: 30d}
    retire_after: 1h
"""
KEYTURN = [sys.executable, "-c", "from rotation.cli import main; main()"]
SUBMIT = tasks.submit
VALUES = {"svc/fast": "fast-initial-value-4711", "svc/slow": "slow-initial-value-0815"}


@dataclass
class Env:
    """One test's ledger, store and policies, shared by the CLI (via os.environ) and the test."""

    url: str
    store_dir: Path
    key: str
    schedules: Path
    runtime: Runtime
    sent: list[tuple[int, str]] = field(default_factory=list)

    def serve(self, task: str, kwargs: dict[str, Any], timeout: float) -> dict[str, Any]:
        """A worker serving the CLI's request in-process: the message as the broker carries it,
        the same handler (verify, authorize, audit, act); the runs it would send are kept."""
        carried = json.loads(json.dumps(kwargs))
        signed = carried.pop("signed", None)
        action = {name: action for action, name in MANUAL.items()}[task]
        handled = handle(self.runtime, action, carried, signed=signed)
        self.sent.extend(handled.enqueue)
        return json.loads(json.dumps(handled.answer))

    def store(self) -> LocalProvider:
        return LocalProvider(self.store_dir, key=self.key)

    def engine(self) -> Engine:
        return Engine(self.runtime, lease=timedelta(minutes=5))

    def sync(self) -> None:
        Dispatcher(self.runtime, self.schedules).sync_policies(self.runtime.clock())

    def run(self, run_id: int) -> Run:
        with self.runtime.ledger.sessions() as session:
            run = session.get(Run, run_id)
            assert run is not None
            return run

    def schedule(self, secret: str) -> Schedule:
        with self.runtime.ledger.sessions() as session:
            schedule = session.get(Schedule, secret)
            assert schedule is not None
            return schedule

    def start(self, secret: str) -> int:
        return rotate_now(self.runtime, secret, actor="test", trigger="manual").run_id

    def drive(self, run_id: int, until: RunState | None = None) -> Run:
        """Advance the run in-process until ``until``, a final state, or a wait."""
        engine = self.engine()
        for _ in range(20):
            run = self.run(run_id)
            if RunState(run.state) in (until, RunState.SUCCEEDED, RunState.FAILED):
                return run
            if not engine.advance(run_id, run.state).executed:
                return run  # waiting (retire grace)
        raise AssertionError("run did not settle")


@pytest.fixture
def env(tmp_path: Path, ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    key = generate_key()
    schedules = tmp_path / "schedules"
    schedules.mkdir()
    (schedules / "svc.yaml").write_text(POLICIES)
    variables = {
        "KEYTURN_DATABASE_URL": ledger_url,
        "SECRETS_PROVIDER": "local",
        "KEYTURN_LOCAL_DIR": str(tmp_path / "store"),
        "KEYTURN_LOCAL_KEY": key,
        "KEYTURN_SCHEDULES": str(schedules),
        "KEYTURN_OPERATOR_KEYS": str(tmp_path / "keys"),
        "KEYTURN_OPERATOR_KEY": str(tmp_path / "keys" / "alice.key"),
    }
    for principal in ("alice", "olivia"):
        generate_key_pair(principal, tmp_path / "keys")
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("KEYTURN_DAILY_BUDGET", raising=False)
    runtime = Runtime(Ledger(ledger_url), worker_id="test-worker")
    e = Env(ledger_url, tmp_path / "store", key, schedules, runtime)
    store = e.store()
    for name, value in VALUES.items():
        store.write(name, value)
    e.sync()
    monkeypatch.setattr(tasks, "submit", e.serve)
    yield e
    runtime.close()


@pytest.fixture
def sent(env: Env) -> list[tuple[int, str]]:
    """``advance`` messages the workers' handler sends for the CLI's requests, captured."""
    return env.sent


def close_client() -> None:
    """Close the CLI's Celery app."""
    if tasks._app is not None:
        tasks._app.close()
    tasks._app = None


def cli(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input)


def assert_no_values(env: Env, text: str) -> None:
    store = env.store()
    for name in VALUES:
        for info in store.versions(name):
            value = store.read(name, stage=next(iter(info.stages))).value if info.stages else None
            assert value is None or str(value) not in text
        assert VALUES[name] not in text


# --- status ------------------------------------------------------------------------------------


def test_status_table_and_json(env: Env) -> None:
    run_id = env.start("svc/fast")
    env.drive(run_id)
    result = cli("status")
    assert result.exit_code == 0, result.output
    assert "svc/fast" in result.output and "svc/slow" in result.output
    assert "succeeded" in result.output and "idle" in result.output
    assert "all on schedule" in result.output

    result = cli("status", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["secret"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {"svc/fast", "svc/slow"}
    fast, slow = rows["svc/fast"], rows["svc/slow"]
    assert fast["state"] == "succeeded" and fast["run_id"] == run_id
    assert fast["provider"] == "local" and fast["policy"] == "fast"
    assert fast["last_rotated_at"] is not None and 0 <= fast["age_seconds"] < 120
    next_due = datetime.fromisoformat(fast["next_due_at"].replace("Z", "+00:00"))
    assert next_due - datetime.now(UTC) > timedelta(days=29)
    assert slow["state"] == "idle" and slow["last_rotated_at"] is None and slow["problem"] is None
    assert_no_values(env, result.output)


def test_status_exits_2_when_overdue_or_needs_attention(env: Env) -> None:
    with env.runtime.ledger.transaction() as session:
        session.execute(
            update(Schedule)
            .where(Schedule.secret == "svc/slow")
            .values(next_due_at=datetime.now(UTC) - timedelta(hours=2))
        )
    result = cli("status")
    assert result.exit_code == 2, result.output
    assert "overdue by 2h" in result.output and "1 need attention" in result.output
    rows = {r["secret"]: r for r in json.loads(cli("status", "--json").stdout)}
    assert rows["svc/slow"]["problem"] == "overdue" and rows["svc/fast"]["problem"] is None
    # a generous tolerance accepts it; a paused policy is not overdue either
    assert cli("status", "--tolerance", "3h").exit_code == 0
    with env.runtime.ledger.transaction() as session:
        session.execute(update(PolicyRow).where(PolicyRow.name == "slow").values(paused=True))
    result = cli("status")
    assert result.exit_code == 0 and "policy paused" in result.output

    run_id = env.start("svc/fast")
    with env.runtime.ledger.transaction() as session:
        session.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(state="needs_attention", last_error="attempts exhausted at step apply (5)")
        )
    result = cli("status", "--json")
    assert result.exit_code == 2
    rows = {r["secret"]: r for r in json.loads(result.stdout)}
    assert rows["svc/fast"]["problem"] == "needs_attention"
    assert "attempts exhausted" in rows["svc/fast"]["note"]


def test_status_flags_a_stalled_run(env: Env) -> None:
    run_id = env.start("svc/fast")
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    with env.runtime.ledger.transaction() as session:  # created an hour ago, no event since
        session.execute(update(Run).where(Run.id == run_id).values(created_at=long_ago))
    result = cli("status")
    assert result.exit_code == 2
    assert f"run {run_id} stalled in pending for 1h" in result.output


# --- rotate --------------------------------------------------------------------------------------


def test_rotate_starts_one_run_and_a_second_rotate_returns_it(
    env: Env, sent: list[tuple[int, str]]
) -> None:
    first = cli("rotate", "svc/slow")
    assert first.exit_code == 0, first.output
    with env.runtime.ledger.sessions() as session:
        runs = list(session.scalars(select(Run)))
    assert len(runs) == 1
    run = runs[0]
    assert (run.trigger, run.actor, run.state) == ("manual", "alice", "pending")
    assert f"started run {run.id} for svc/slow" in first.output
    assert sent == [(run.id, "pending")]

    second = cli("rotate", "svc/slow")
    assert second.exit_code == 0, second.output
    assert f"already being rotated: run {run.id} (pending)" in second.output
    assert sent == [(run.id, "pending")]  # nothing sent for the existing run
    with env.runtime.ledger.sessions() as session:
        assert len(list(session.scalars(select(Run)))) == 1


def test_rotate_with_the_broker_down_says_so_and_starts_nothing(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tasks, "submit", SUBMIT)
    monkeypatch.setattr(tasks, "_app", None)
    monkeypatch.setenv("KEYTURN_BROKER_URL", "redis://:pw@127.0.0.1:6390/0")
    try:
        result = cli("rotate", "svc/fast")
    finally:
        close_client()
    assert result.exit_code == 1, result.output
    assert "could not send the request to the workers" in result.output
    assert "nothing was done" in result.output and ":pw@" not in result.output
    with env.runtime.ledger.sessions() as session:
        assert list(session.scalars(select(Run))) == []


def test_rotate_with_no_worker_gives_up_when_the_request_expires(env: Env) -> None:
    import redis

    queue = f"kt-test-{uuid.uuid4().hex[:8]}"
    variables = {"KEYTURN_BROKER_URL": BROKER, "KEYTURN_QUEUE": queue}
    try:
        done = subprocess.run(
            [*KEYTURN, "rotate", "svc/fast"],
            env={**os.environ, **variables, "KEYTURN_REQUEST_TTL_SECONDS": "5"},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        with redis.Redis.from_url(BROKER) as client:
            client.delete(queue)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no worker answered within 5s" in done.stderr
    assert "expired unanswered and nothing was done" in done.stderr
    with env.runtime.ledger.sessions() as session:
        assert list(session.scalars(select(Run))) == []


def test_rotate_unknown_secret_and_rotate_all(env: Env, sent: list[tuple[int, str]]) -> None:
    result = cli("rotate", "svc/nope")
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "No rotation policy governs" in result.output

    declined = cli("rotate-all", "svc/", input="n\n")
    assert declined.exit_code == 1 and "svc/fast" in declined.output
    assert sent == []
    result = cli("rotate-all", "svc/*", "--yes")
    assert result.exit_code == 0, result.output
    assert {state for _, state in sent} == {"pending"} and len(sent) == 2
    assert cli("rotate-all", "nothing-matches", "--yes").exit_code == 3


def test_rotate_all_again_starts_nothing_twice_and_wait_lists_what_did_not_succeed(
    env: Env, sent: list[tuple[int, str]]
) -> None:
    first = cli("rotate-all", "svc/", "--yes")
    assert first.exit_code == 0, first.output
    assert "pending 2, running 0, succeeded 0" in first.output
    assert "--since" in first.output  # how to follow it again without starting anything twice
    runs = {run.secret: run for run in map(env.run, (run_id for run_id, _ in sent))}
    assert env.drive(runs["svc/fast"].id).state == "succeeded"
    env.drive(runs["svc/slow"].id)  # waits in its retire grace (1h)

    again = cli("rotate-all", "svc/", "--yes", "--since", "1h", "--wait", "--timeout", "1")
    assert "svc/fast was rotated since then" in again.output
    assert "svc/slow is already being rotated" in again.output
    assert len(sent) == 2  # nothing started twice
    with env.runtime.ledger.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 2
    assert again.exit_code == 1  # one run still open after the timeout: listed
    assert "1 of 2 runs did not succeed" in again.output
    assert f"run {runs['svc/slow'].id}  svc/slow  restarted" in again.output

    bad = cli("rotate-all", "svc/", "--yes", "--since", "yesterday-ish")
    assert bad.exit_code == 2 and "--since" in bad.output


def test_rotate_wait_follows_a_real_worker(env: Env, tmp_path: Path) -> None:
    with env.runtime.ledger.transaction() as session:  # beat must not start it on schedule
        session.execute(update(Schedule).values(next_due_at=datetime.now(UTC) + timedelta(days=30)))
    cluster_env = {
        **os.environ,
        "KEYTURN_BROKER_URL": BROKER,
        "KEYTURN_QUEUE": f"kt-test-{uuid.uuid4().hex[:8]}",
        "KEYTURN_TICK_SECONDS": "1",
        "KEYTURN_LEASE_SECONDS": "4",
        "KEYTURN_REDELIVER_SECONDS": "3",
        "PYTHONUNBUFFERED": "1",
    }
    cluster = Cluster(cluster_env, tmp_path)
    try:
        cluster.start("worker")
        cluster.start("beat")
        done = subprocess.run(
            [*KEYTURN, "rotate", "svc/fast", "--wait", "--timeout", "60"],
            env=cluster_env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=90,
        )
    finally:
        cluster.stop()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output + cluster.logs()
    assert "succeeded" in output and "retire" in output and "finish" in output
    assert env.store().read("svc/fast").value != VALUES["svc/fast"]
    assert_no_values(env, output)


def test_rotate_wait_times_out_with_exit_1(env: Env, sent: list[tuple[int, str]]) -> None:
    result = cli("rotate", "svc/slow", "--wait", "--timeout", "1")
    assert result.exit_code == 1, result.output
    assert "is still pending after 1s" in result.output
    assert "keyturn history svc/slow" in result.output


# --- runs and history ------------------------------------------------------------------------


def test_runs_and_history_never_print_values(env: Env) -> None:
    fast = env.drive(env.start("svc/fast"))
    slow = env.drive(env.start("svc/slow"))
    assert fast.state == "succeeded" and slow.state == "restarted"

    result = cli("runs")
    assert result.exit_code == 0, result.output
    assert f"{fast.id}" in result.output and "succeeded" in result.output
    assert "restarted" in result.output
    assert_no_values(env, result.output)
    only = json.loads(cli("runs", "--state", "succeeded", "--json").stdout)
    assert [r["id"] for r in only] == [fast.id]
    assert json.loads(cli("runs", "--secret", "svc/slow", "--json").stdout)[0]["id"] == slow.id

    result = cli("history", "svc/fast")
    assert result.exit_code == 0, result.output
    assert "current" in result.output and "previous" in result.output
    assert "pending -> created" in result.output and "retired -> succeeded" in result.output
    assert_no_values(env, result.output)
    data = json.loads(cli("history", "svc/fast", "--json").stdout)
    assert len(data["versions"]) == 2 and data["runs"][0]["id"] == fast.id
    assert [e["to_state"] for e in data["runs"][0]["events"]][-1] == "succeeded"
    assert_no_values(env, json.dumps(data))
    assert cli("history", "svc/never-existed").exit_code == 3


# --- plan ----------------------------------------------------------------------------------------


def test_plan_flags_collision_and_over_budget(env: Env, tmp_path: Path) -> None:
    files = tmp_path / "plan"
    files.mkdir()
    (files / "p.yaml").write_text(
        POLICIES + "  - {name: other, secret: svc/other, kind: random, schedule: {every: 90d}}\n"
    )
    result = cli("plan", "--from-files", "--schedules", str(files), "--budget", "2")
    assert result.exit_code == 0, result.output
    assert "collision" in result.output and "over budget" in result.output
    assert "on local: svc/fast, svc/other, svc/slow at the same moment" in result.output
    strict = cli("plan", "--from-files", "--schedules", str(files), "--budget", "2", "--strict")
    assert strict.exit_code == 2
    data = json.loads(
        cli("plan", "--from-files", "--schedules", str(files), "--budget", "2", "--json").stdout
    )
    (collision,) = [c for c in data["collisions"] if len(c["secrets"]) == 3]
    assert set(collision["secrets"]) == {"svc/fast", "svc/slow", "svc/other"}
    assert data["days"][0]["over_budget"] and data["days"][0]["rotations"] == 3

    # from the ledger: both secrets are due now (never rotated), 30 days apart after that
    result = cli("plan", "--days", "45", "--json")
    assert result.exit_code == 0, result.output
    rotations = json.loads(result.stdout)["rotations"]
    assert sorted(r["secret"] for r in rotations) == [
        "svc/fast",
        "svc/fast",
        "svc/slow",
        "svc/slow",
    ]


# --- rollback ------------------------------------------------------------------------------------


def test_rollback_during_restarted_restores_the_previous_value(
    env: Env, sent: list[tuple[int, str]]
) -> None:
    run = env.drive(env.start("svc/slow"))
    assert run.state == "restarted" and run.next_attempt_at is not None  # in the retire grace
    store = env.store()
    new_value = store.read("svc/slow").value
    assert new_value != VALUES["svc/slow"]

    result = cli("rollback", "svc/slow")
    assert result.exit_code == 0, result.output
    assert f"run {run.id} (restarted -> rolling_back)" in result.output
    assert new_value not in result.output and VALUES["svc/slow"] not in result.output
    assert sent == [(run.id, "rolling_back")]  # the workers roll it back, telling consumers
    rolling = env.run(run.id)
    assert rolling.state == "rolling_back" and rolling.lease_owner is None
    after = env.drive(run.id)
    assert store.read("svc/slow").value == VALUES["svc/slow"]
    assert after.state == "failed" and (after.last_error or "").startswith("rolled back by alice")
    assert after.lease_owner is None and after.finished_at is not None
    with env.runtime.ledger.sessions() as session:
        found = session.scalars(
            select(RunEvent).where(RunEvent.run_id == run.id).order_by(RunEvent.id)
        ).all()
    assert (found[-1].step, found[-1].outcome, found[-1].to_state) == (
        "rollback",
        "rollback",
        "failed",
    )
    began = [e for e in found if e.to_state == "rolling_back" and e.from_state == "restarted"]
    assert began and began[0].worker.startswith("rollback:alice@")
    schedule = env.schedule("svc/slow")
    assert schedule.next_due_at is not None
    assert timedelta(minutes=55) < schedule.next_due_at - datetime.now(UTC) < timedelta(hours=1)
    # the engine finds nothing left to do for the run
    assert not env.engine().advance(run.id, "restarted").executed


def test_rollback_from_promoted_and_lease_contention(env: Env, sent: list[tuple[int, str]]) -> None:
    run_id = env.start("svc/slow")
    run = env.drive(run_id, until=RunState.PROMOTED)
    assert run.state == "promoted"
    other = env.engine()
    assert other._take_lease(run_id, None, datetime.now(UTC))  # a worker is mid-step
    busy = cli("rollback", "svc/slow")
    assert busy.exit_code == 1 and "being advanced by test-worker" in busy.output
    with env.runtime.ledger.transaction() as session:
        session.execute(
            update(Run).where(Run.id == run_id).values(lease_owner=None, lease_expires_at=None)
        )
    result = cli("rollback", "svc/slow", "--retry-after", "7d")
    assert result.exit_code == 0, result.output
    assert env.drive(run_id).state == "failed"
    assert env.store().read("svc/slow").value == VALUES["svc/slow"]
    assert env.schedule("svc/slow").next_due_at - datetime.now(UTC) > timedelta(days=6)


def test_rollback_refuses_clearly_when_nothing_can_be_rolled_back(env: Env) -> None:
    result = cli("rollback", "svc/slow")
    assert result.exit_code == 1
    assert "has never been rotated" in result.output and result.output.count("\n") == 1

    run = env.drive(env.start("svc/fast"))
    assert run.state == "succeeded"
    result = cli("rollback", "svc/fast")
    assert result.exit_code == 1
    assert (
        f"nothing to roll back: the last rotation of 'svc/fast' (run {run.id}) finished and its "
        "previous credential was retired at " in result.output
    )
    before = env.store().read("svc/fast").value

    early = env.drive(env.start("svc/fast"), until=RunState.CREATED)
    result = cli("rollback", "svc/fast")
    assert result.exit_code == 1 and f"run {early.id} of 'svc/fast' is in created" in result.output
    assert env.store().read("svc/fast").value == before
    assert env.run(early.id).state == "created" and env.run(early.id).lease_owner is None


# --- secrets -------------------------------------------------------------------------------------


def test_secrets_set_from_stdin_never_echoes_and_get_prints_exactly(env: Env) -> None:
    value = "pa$$word with spaces\tand tab"
    result = cli("secrets", "set", "app/token", input=value + "\n")
    assert result.exit_code == 0, result.output
    assert value not in result.output and "stored app/token" in result.output
    assert env.store().read("app/token").value == value  # one trailing newline dropped

    got = cli("secrets", "get", "app/token")
    assert got.exit_code == 0 and got.stdout == value

    creds = {"username": "app", "password": "s3cr3t-json-pw", "port": 5432}
    result = cli("secrets", "set", "app/db", "--json", input=json.dumps(creds))
    assert result.exit_code == 0 and "s3cr3t-json-pw" not in result.output
    assert json.loads(cli("secrets", "get", "app/db").stdout) == creds

    bad = cli("secrets", "set", "app/db", "--json", input='{"password": "leak-me",')
    assert bad.exit_code == 2 and "leak-me" not in bad.output and "not valid JSON" in bad.output
    assert cli("secrets", "set", "app/empty", input="").exit_code == 2
    assert cli("secrets", "get", "app/missing").exit_code == 3


def test_secrets_list_versions_previous_and_delete(env: Env) -> None:
    env.drive(env.start("svc/fast"))
    listed = cli("secrets", "list", "--prefix", "svc/")
    assert listed.stdout.split() == ["svc/fast", "svc/slow"]
    versions = cli("secrets", "versions", "svc/fast")
    assert (
        versions.exit_code == 0 and "current" in versions.output and "previous" in versions.output
    )
    assert_no_values(env, versions.output)
    previous = cli("secrets", "get", "svc/fast", "--stage", "previous")
    assert previous.stdout == VALUES["svc/fast"]

    declined = cli("secrets", "delete", "svc/slow", input="n\n")
    assert declined.exit_code == 1 and "svc/slow" in env.store().list()
    assert cli("secrets", "delete", "svc/slow", "--yes").exit_code == 0
    assert "svc/slow" not in env.store().list()


# --- errors --------------------------------------------------------------------------------------


def test_bad_ledger_url_is_one_line_without_the_password(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KEYTURN_DATABASE_URL", "postgresql://bob:hunter2@127.0.0.1:1/ledger")
    for args in (["status"], ["runs"], ["rotate", "x"], ["plan"], ["rollback", "x"]):
        result = cli(*args)
        assert result.exit_code == 1, (args, result.output)
        assert result.output.count("\n") == 1, result.output
        assert "cannot reach the ledger at postgresql://bob@127.0.0.1:1/ledger" in result.output
        assert "hunter2" not in result.output and "Traceback" not in result.output

    monkeypatch.setenv("KEYTURN_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.sqlite'}")
    result = cli("status")
    assert result.exit_code == 2 and "keyturn db upgrade" in result.output
    assert result.output.count("\n") == 1


def test_usage_errors_are_one_line() -> None:
    for args in (
        ["runs", "--state", "bogus"],
        ["rotate"],
        ["secrets", "nope"],
        ["plan", "--gap", "x"],
    ):
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.count("\n") == 1 and result.output.startswith("error: "), result.output
        assert "--help" in result.output
