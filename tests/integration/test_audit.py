"""The audit trail in a real ledger: a linear chain under concurrent writers, tamper detection
by real SQL, no values in any row, denials recorded, engine transitions audited, the CLI."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select, text

from rotation import PermissionDenied, SecretsManager, acting_as
from rotation.access import audit as audit_module
from rotation.access import roles
from rotation.access.audit import (
    GENESIS_HASH,
    AuditEvent,
    LedgerAuditSink,
    LogAuditSink,
    record_hash,
    sink_from_env,
    transition_event,
    verify,
)
from rotation.cli import main
from rotation.ledger.db import Ledger
from rotation.ledger.migrate import upgrade
from rotation.ledger.models import AuditRecord, Run
from rotation.providers.memory import MemoryProvider
from rotation.run.engine import Engine
from rotation.run.runtime import Runtime
from rotation.run.states import RunState
from rotation.scheduler.dispatcher import Dispatcher


@pytest.fixture(autouse=True)
def clean_roles(monkeypatch):
    for var in ("KEYTURN_ROLES_FILE", "KEYTURN_ACTOR", "KEYTURN_AUDIT"):
        monkeypatch.delenv(var, raising=False)
    roles.reset()
    yield
    roles.reset()
    audit_module.reset_default_sink()


def write_events(ledger: Ledger, count: int, actor: str = "alice") -> None:
    sink = LedgerAuditSink(ledger)
    for i in range(count):
        sink.write(AuditEvent(action="secret.get", actor=actor, secret=f"s{i}", version_id="v1"))


def rows(ledger: Ledger) -> list[AuditRecord]:
    with ledger.sessions() as session:
        return list(session.scalars(select(AuditRecord).order_by(AuditRecord.seq)))


def check(ledger: Ledger) -> audit_module.VerifyReport:
    with ledger.sessions() as session:
        return verify(session)


def sql(ledger: Ledger, statement: str) -> None:
    with ledger.transaction() as session:
        session.execute(text(statement))


# --- the chain --------------------------------------------------------------------------------


def test_records_chain_from_genesis(ledger) -> None:
    write_events(ledger, 3)
    chain = rows(ledger)
    assert [r.seq for r in chain] == [1, 2, 3]
    assert chain[0].prev_hash == GENESIS_HASH
    assert [r.prev_hash for r in chain[1:]] == [r.hash for r in chain[:-1]]
    assert all(record_hash(r) == r.hash for r in chain)
    report = check(ledger)
    assert report.ok and report.records == 3 and report.head_hash == chain[-1].hash


def _hammer(ledger: Ledger, threads: int, each: int) -> None:
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            barrier.wait()
            write_events(ledger, each, actor=f"t{n}")
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []


def test_concurrent_writers_never_fork_the_chain(ledger_url) -> None:
    ledger = Ledger(ledger_url, pool_size=10)
    try:
        _hammer(ledger, threads=8, each=25)
        chain = rows(ledger)
        assert [r.seq for r in chain] == list(range(1, 201))
        assert len({r.prev_hash for r in chain}) == 200  # no two records share a predecessor
        assert {r.actor for r in chain} == {f"t{n}" for n in range(8)}
        assert check(ledger).ok
    finally:
        ledger.dispose()


def test_concurrent_writers_on_sqlite(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    upgrade(url)
    ledger = Ledger(url)
    try:
        _hammer(ledger, threads=4, each=15)
        assert [r.seq for r in rows(ledger)] == list(range(1, 61))
        assert check(ledger).ok
    finally:
        ledger.dispose()


AWKWARD = [
    'quote " backslash \\ slash /',
    "newline\n tab\t cr\r bell\x07 unit\x1f del\x7f",
    "unicode: é ü 日本 🔑 \u2028 \u00a0",
    "",
]


def test_postgres_computes_the_hash_verify_computes(ledger) -> None:
    """Appends hash their record in SQL (one statement); each must equal record_hash of the
    stored row for every kind of text, or verify would call the record edited."""
    sink = LedgerAuditSink(ledger)
    at = datetime(2026, 1, 2, 3, 4, 5, 60, tzinfo=UTC)
    for i, awkward in enumerate(AWKWARD):
        sink.write(AuditEvent("secret.put", awkward or "x", "ok", awkward, awkward, i, awkward))
        sink.write(AuditEvent("secret.get", "bob", f"error:{awkward}", None, None, None, None, at))
    chain = rows(ledger)
    assert [r.seq for r in chain] == list(range(1, 2 * len(AWKWARD) + 1))
    assert [r.hash for r in chain] == [record_hash(r) for r in chain]
    assert [r.prev_hash for r in chain] == [GENESIS_HASH] + [r.hash for r in chain[:-1]]
    assert chain[1].at == at
    assert check(ledger).ok
    with ledger.sessions() as session:
        head = session.execute(text("SELECT seq, hash FROM audit_head")).one()
    assert tuple(head) == (chain[-1].seq, chain[-1].hash)


# --- tampering, with real SQL -----------------------------------------------------------------


def test_edited_record_is_named(ledger) -> None:
    write_events(ledger, 6)
    sql(ledger, "UPDATE audit_records SET actor = 'mallory' WHERE seq = 3")
    report = check(ledger)
    assert [(p.seq, p.kind) for p in report.problems] == [(3, "edited")]
    assert "seq=3" in str(report.problems[0])


def test_deleted_record_is_named(ledger) -> None:
    write_events(ledger, 6)
    sql(ledger, "DELETE FROM audit_records WHERE seq = 4")
    problems = check(ledger).problems
    assert [(p.seq, p.kind) for p in problems] == [(5, "deleted")]
    assert "seq 4 missing" in problems[0].message


def test_deleted_first_records_are_named(ledger) -> None:
    write_events(ledger, 4)
    sql(ledger, "DELETE FROM audit_records WHERE seq <= 2")
    problems = check(ledger).problems
    assert [(p.seq, p.kind) for p in problems] == [(3, "deleted")]
    assert "seq 1..2 missing" in problems[0].message


def test_inserted_record_is_named(ledger) -> None:
    write_events(ledger, 5)
    sql(
        ledger,
        "INSERT INTO audit_records (seq, at, actor, action, secret, version_id, run_id, "
        "outcome, detail, prev_hash, hash) SELECT 6, at, 'mallory', action, secret, version_id, "
        "run_id, outcome, detail, prev_hash, hash FROM audit_records WHERE seq = 2",
    )
    problems = check(ledger).problems
    assert [(p.seq, p.kind) for p in problems] == [(6, "inserted")]
    assert "same predecessor as seq 2" in problems[0].message


def test_forged_tail_record_is_named(ledger) -> None:
    write_events(ledger, 3)
    head = rows(ledger)[-1]
    sql(
        ledger,
        "INSERT INTO audit_records (seq, at, actor, action, outcome, prev_hash, hash) VALUES "
        f"(4, now(), 'mallory', 'secret.get', 'ok', '{head.hash}', '{'f' * 64}')",
    )
    assert [(p.seq, p.kind) for p in check(ledger).problems] == [(4, "edited")]


def test_rehashed_edit_breaks_the_next_link(ledger) -> None:
    write_events(ledger, 5)
    with ledger.transaction() as session:
        record = session.scalars(select(AuditRecord).where(AuditRecord.seq == 2)).one()
        record.actor = "mallory"
        record.hash = record_hash(record)  # a careful forger re-hashes the record
    problems = check(ledger).problems
    assert [(p.seq, p.kind) for p in problems] == [(3, "inserted")]
    assert "seq 2 was edited and re-hashed" in problems[0].message


def test_every_broken_link_is_reported(ledger) -> None:
    write_events(ledger, 10)
    sql(ledger, "UPDATE audit_records SET detail = 'x' WHERE seq IN (2, 7)")
    sql(ledger, "DELETE FROM audit_records WHERE seq = 5")
    assert [(p.seq, p.kind) for p in check(ledger).problems] == [
        (2, "edited"),
        (6, "deleted"),
        (7, "edited"),
    ]


# --- SecretsManager with the ledger -----------------------------------------------------------


def table_text(ledger: Ledger) -> str:
    with ledger.sessions() as session:
        return "\n".join(session.scalars(text("SELECT audit_records::text FROM audit_records")))


def test_no_value_in_any_audit_row(ledger) -> None:
    manager = SecretsManager(MemoryProvider(), audit=LedgerAuditSink(ledger))
    values = ["pw-VALUE-one", "key-VALUE-two"]
    with acting_as("alice"):
        manager.set("db_password", values[0])
        manager.set_many({"api_key": values[1], "json_cred": {"username": "u", "password": "p-V3"}})
        values.append("p-V3")
        manager.get("db_password")
        manager.get_many(["api_key", "json_cred"])
        values.append(manager.rotate("api_key"))  # type: ignore[arg-type]
        report = manager.rotate_all("db_")
        values.append(manager.get("db_password", use_cache=False))  # type: ignore[arg-type]
        values.append(manager.get("json_cred", use_cache=False)["password"])  # type: ignore[index]
        manager.versions("db_password")
        manager.list()
        manager.delete("api_key")
    assert report.ok
    dump = table_text(ledger)
    assert "db_password" in dump and "alice" in dump  # the scan reads the real rows
    for value in values:
        assert value not in dump, value
    assert check(ledger).ok
    manager.close()


def test_manager_denial_is_audited_in_the_ledger(ledger) -> None:
    roles.configure({"alice": "admin", "bob": "viewer"})
    provider = MemoryProvider()
    provider.write("db_password", "pw-denied-value")
    manager = SecretsManager(provider, audit=LedgerAuditSink(ledger))
    with acting_as("bob"):
        assert manager.list() == ["db_password"]
        with pytest.raises(PermissionDenied, match=r"'bob'.*'read' permission"):
            manager.get("db_password")
    with acting_as("alice"):
        assert manager.get("db_password") == "pw-denied-value"
    chain = rows(ledger)
    assert [(r.actor, r.action, r.outcome, r.secret) for r in chain] == [
        ("bob", "secret.list", "ok", None),
        ("bob", "permission.denied", "denied", "db_password"),
        ("alice", "secret.get", "ok", "db_password"),
    ]
    assert chain[1].detail == "secret.get; needs read"
    assert "pw-denied-value" not in table_text(ledger)


def test_from_env_wires_the_sink(ledger_url, monkeypatch) -> None:
    env = {"SECRETS_PROVIDER": "memory", "KEYTURN_DATABASE_URL": ledger_url}
    manager = SecretsManager.from_env(env)
    assert isinstance(manager.audit, LedgerAuditSink)
    manager.set("from_env", "v-from-env")
    manager.close()
    assert isinstance(sink_from_env({"SECRETS_PROVIDER": "memory"}), LogAuditSink)
    assert sink_from_env({**env, "KEYTURN_AUDIT": "off"}) is None
    ledger = Ledger(ledger_url)
    try:
        assert [(r.action, r.outcome) for r in rows(ledger)] == [
            ("secret.set", "started"),
            ("secret.set", "ok"),
        ]
    finally:
        ledger.dispose()


def test_missing_table_fails_writes_closed(empty_database) -> None:
    ledger = Ledger(empty_database)
    provider = MemoryProvider()
    try:
        manager = SecretsManager(provider, audit=LedgerAuditSink(ledger))
        with pytest.raises(audit_module.AuditWriteFailed, match="keyturn db upgrade"):
            manager.set("db_password", "pw-unwritten")
        assert provider.list() == []
    finally:
        ledger.dispose()


# --- engine transitions -----------------------------------------------------------------------

POLICY = """
policies:
  - name: api-keys
    secrets: ["api_key_*"]
    provider: memory
    kind: random
    schedule: {every: 1h}
    retire_after: 10m
"""


def test_engine_transitions_are_audited(ledger, tmp_path: Path) -> None:
    (tmp_path / "schedules").mkdir()
    (tmp_path / "schedules" / "p.yaml").write_text(POLICY)
    backend = MemoryProvider()
    backend.write("api_key_ncbi", "initial-VALUE")
    now = [datetime(2026, 1, 5, 3, 0, tzinfo=UTC)]
    runtime = Runtime(ledger, clock=lambda: now[0], worker_id="w1", providers={"memory": backend})
    engine = Engine(runtime)
    dispatcher = Dispatcher(runtime, tmp_path / "schedules")
    queue = list(dispatcher.tick().enqueue)
    run_id = queue[0][0]
    for _ in range(20):
        while queue:
            outcome = engine.advance(*queue.pop(0))
            if outcome.enqueue and outcome.state is not None:
                queue.append((run_id, outcome.state.value))
        now[0] += timedelta(minutes=11)  # past the retire grace
        queue.extend(dispatcher.tick().enqueue)
        if not queue:
            break
    with ledger.sessions() as session:
        run = session.get(Run, run_id)
        assert run is not None and run.state == RunState.SUCCEEDED.value
    transitions = [r for r in rows(ledger) if r.action == "run.transition"]
    assert [r.detail.split(" (")[0] for r in transitions if r.detail] == [
        "pending -> created",
        "created -> applied",
        "applied -> tested",
        "tested -> promoted",
        "promoted -> restarted",
        "restarted -> retired",
        "retired -> succeeded",
    ]
    assert {(r.run_id, r.secret, r.actor, r.outcome) for r in transitions} == {
        (run_id, "api_key_ncbi", run.actor, "ok")
    }
    assert transitions[-1].version_id == run.to_version
    assert check(ledger).ok
    assert "VALUE" not in table_text(ledger)
    assert backend.read("api_key_ncbi").value not in table_text(ledger)


# --- the CLI ----------------------------------------------------------------------------------


@pytest.fixture
def cli_env(ledger_url, monkeypatch):
    monkeypatch.setenv("KEYTURN_DATABASE_URL", ledger_url)
    return ledger_url


def test_cli_verify_names_the_tampered_record(cli_env, ledger) -> None:
    write_events(ledger, 4)
    ok = CliRunner().invoke(main, ["audit", "verify"])
    assert ok.exit_code == 0, ok.output
    assert ok.output.startswith("ok: 4 records, chain intact")
    sql(ledger, "UPDATE audit_records SET secret = 'other' WHERE seq = 2")
    bad = CliRunner().invoke(main, ["audit", "verify"])
    assert bad.exit_code == 1
    assert "record id=2 seq=2: edited" in bad.output


def test_cli_tail_filters_and_prints_no_values(cli_env, ledger) -> None:
    manager = SecretsManager(MemoryProvider(), audit=LedgerAuditSink(ledger))
    with acting_as("alice"):
        manager.set("db_password", "pw-tail-VALUE")
        manager.set("api_key", "key-tail-VALUE")
        manager.get("db_password")
    result = CliRunner().invoke(main, ["audit", "tail", "-n", "2", "--secret", "db_password"])
    assert result.exit_code == 0, result.output
    assert "VALUE" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[0].split()[:4] == ["seq", "at", "(UTC)", "actor"]
    assert [line.split()[4] for line in lines[1:]] == ["secret.set", "secret.get"]
    assert all("db_password" in line and "alice" in line for line in lines[1:])


def test_cli_tail_follow_prints_new_records(cli_env, ledger) -> None:
    write_events(ledger, 2)
    later = threading.Timer(0.3, lambda: write_events(ledger, 1, actor="latecomer"))
    later.start()
    try:
        result = CliRunner().invoke(
            main, ["audit", "tail", "--follow", "--interval", "0.2", "--max-polls", "8"]
        )
    finally:
        later.join()
    assert result.exit_code == 0, result.output
    assert result.output.count("latecomer") == 1 and result.output.count("alice") == 2


def test_cli_audit_needs_the_audit_permission(cli_env, ledger, tmp_path, monkeypatch) -> None:
    bindings = tmp_path / "roles.yaml"
    bindings.write_text("bindings:\n  auditor: admin\n  '*': operator\n")
    monkeypatch.setenv("KEYTURN_ROLES_FILE", str(bindings))
    monkeypatch.setenv("KEYTURN_ACTOR", "ci-bot")
    denied = CliRunner().invoke(main, ["audit", "tail"])
    assert denied.exit_code == 1
    assert "Permission denied: 'ci-bot' (role: operator)" in denied.output
    monkeypatch.setenv("KEYTURN_ACTOR", "auditor")
    roles.reset()  # a CLI process reads its identity once; here both runs share one process
    allowed = CliRunner().invoke(main, ["audit", "tail"])
    assert allowed.exit_code == 0, allowed.output
    assert "permission.denied" in allowed.output and "ci-bot" in allowed.output


def test_failed_transition_names_the_error_class() -> None:
    run = Run(id=7, secret="api_key_x", actor="alice", state="applied", to_version="v2")
    at = datetime(2026, 1, 5, tzinfo=UTC)
    failed = transition_event(run, "failed", "test", "failed", "RotationError: refused; undone", at)
    assert (failed.outcome, failed.detail) == (
        "error:RotationError",
        "applied -> failed (step test): RotationError: refused; undone",
    )
    assert (failed.run_id, failed.actor, failed.version_id) == (7, "alice", "v2")
    exhausted = transition_event(run, "needs_attention", "test", "failed", "attempts exhausted", at)
    assert exhausted.outcome == "error:RotationError"
    created = transition_event(run, "created", "create", "ok", None, at, {"to_version": "v3"})
    assert (created.outcome, created.version_id) == ("ok", "v3")
