"""Manual requests are authenticated (issue 16): real worker and beat processes, a real Flower,
the real ``keyturn`` CLI.

- the CLI needs only SELECT on the ledger: rotate, rotate --wait, rotate-all, rollback and
  resolve work with a Postgres role that can read and nothing else; the runs record the signer;
- rollback by a viewer is refused and audited, by an operator done and audited;
- a forged actor (signed with another key, or named in an unsigned message) is refused and
  audited; a replayed signed request is refused and audited;
- an unsigned Flower call acts as ``api``: refused without a binding for ``api``, allowed with
  one, both audited.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from celery import Celery
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg import sql
from sqlalchemy import select, update
from sqlalchemy.engine import make_url

from rotation.access.requests import (
    Keyring,
    SignedRequest,
    consume_nonce,
    load_private_key,
    sign,
    verify,
)
from rotation.errors import BackendUnavailable, RequestRefused
from rotation.ledger.db import Ledger
from rotation.ledger.models import AuditRecord, RequestNonce, Run, Schedule
from rotation.run.engine import Engine
from rotation.run.runtime import Runtime
from rotation.run.states import RunState
from rotation.scheduler.dispatcher import Dispatcher
from rotation.scheduler.triggers import rotate_now
from tests.backends.cluster import BROKER, REPO, Cluster, runs, store, wait_for
from tests.backends.ledger import ADMIN_URL
from tests.integration.test_flower import PASSWORD, USER, start_flower

POLICIES = """
policies:
  - name: fast
    secrets: [svc/fast, svc/other_a, svc/other_b]
    kind: random
    schedule: {every: 30d}
    retire_after: 0s
  - name: slow
    secrets: [svc/slow, svc/stuck]
    kind: random
    schedule: {every: 30d}
    retire_after: 1h
"""
SECRETS = ("svc/fast", "svc/other_a", "svc/other_b", "svc/slow", "svc/stuck")
KEYTURN = [sys.executable, "-c", "from rotation.cli import main; main()"]


def prepare(cluster: Cluster, ledger_url: str, bindings: dict[str, str]) -> None:
    """Policies, initial values and role bindings; the schedules synced and not due, so that
    only manual requests start runs."""
    (Path(cluster.env["KEYTURN_SCHEDULES"]) / "svc.yaml").write_text(POLICIES)
    for name in SECRETS:
        store(cluster).write(name, f"initial-{name}-value-5d2e")
    roles = cluster.workdir / "roles.yaml"
    roles.write_text(json.dumps({"bindings": bindings}))
    cluster.env["KEYTURN_ROLES_FILE"] = str(roles)
    runtime = Runtime(Ledger(ledger_url), environ=cluster.env)
    try:
        now = runtime.clock()
        Dispatcher(runtime, cluster.env["KEYTURN_SCHEDULES"]).sync_policies(now)
        with runtime.ledger.transaction() as session:
            session.execute(update(Schedule).values(next_due_at=now + timedelta(days=30)))
    finally:
        runtime.close()


def audit_rows(ledger: Ledger, *actions: str) -> list[tuple[str, str, str, str | None]]:
    with ledger.sessions() as session:
        return [
            tuple(row)  # type: ignore[misc]
            for row in session.execute(
                select(
                    AuditRecord.actor, AuditRecord.action, AuditRecord.outcome, AuditRecord.detail
                )
                .where(AuditRecord.action.in_(actions))
                .order_by(AuditRecord.seq)
            )
        ]


def run_of(ledger: Ledger, secret: str) -> Run | None:
    found = [r for r in runs(ledger) if r.secret == secret]
    return found[-1] if found else None


@pytest.fixture
def readonly_url(ledger_url: str) -> Iterator[str]:
    """The ledger's URL as a fresh login role granted SELECT and nothing else (the grants of
    docs/audit-and-roles.md, "Trust boundaries")."""
    url = make_url(ledger_url)
    role = f"kt_ro_{uuid.uuid4().hex[:8]}"
    ident = sql.Identifier(role)
    admin_db = ADMIN_URL.rsplit("/", 1)[0] + f"/{url.database}"
    with psycopg.connect(admin_db, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(str(url.database)), ident
            )
        )
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(ident))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(ident))
    yield url.set(username=role, password=None).render_as_string(hide_password=False)
    with psycopg.connect(admin_db, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
        conn.execute(sql.SQL("DROP ROLE {}").format(ident))


def keyturn(env: dict[str, str], *args: str) -> tuple[int, str]:
    done = subprocess.run(
        [*KEYTURN, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    return done.returncode, done.stdout + done.stderr


def test_the_cli_needs_only_select_on_the_ledger_and_rollback_is_role_checked(
    cluster: Cluster, ledger_url: str, ledger: Ledger, readonly_url: str
) -> None:
    prepare(
        cluster,
        ledger_url,
        {"olivia": "operator", "sam": "super_admin", "vic": "viewer"},
    )
    # a run that needs attention, for `resolve` (set up in-process, as an earlier failure would)
    stuck = stuck_run(cluster, ledger_url, "svc/stuck")

    def as_(principal: str) -> dict[str, str]:
        return {**cluster.operator_env(principal), "KEYTURN_DATABASE_URL": readonly_url}

    olivia, sam, vic = as_("olivia"), as_("sam"), as_("vic")
    # the read-only role really cannot write
    readonly = Ledger(readonly_url)
    try:
        with pytest.raises(Exception, match="permission denied"):
            with readonly.transaction() as session:
                session.execute(update(Schedule).values(missing_since=None))
    finally:
        readonly.dispose()
    cluster.start("worker")
    cluster.start("beat")  # wakes the runs after their retire grace

    code, out = keyturn(olivia, "rotate", "svc/slow")
    assert code == 0, out + cluster.logs()
    slow = run_of(ledger, "svc/slow")
    assert slow is not None and f"started run {slow.id} for svc/slow" in out
    assert (slow.actor, slow.trigger) == ("olivia", "manual")  # the signer, as verified

    code, out = keyturn(olivia, "rotate", "svc/fast", "--wait", "--timeout", "90")
    assert code == 0, out + cluster.logs()
    assert "succeeded" in out
    fast = run_of(ledger, "svc/fast")
    assert fast is not None and (fast.actor, fast.state) == ("olivia", "succeeded")

    code, out = keyturn(olivia, "rotate-all", "svc/other", "--yes")
    assert code == 1 and "Permission denied: 'olivia'" in out, out  # rotate_all: super_admin
    code, out = keyturn(sam, "rotate-all", "svc/other", "--yes")
    assert code == 0 and out.count("started run") == 2, out
    assert {r.actor for r in runs(ledger) if r.secret.startswith("svc/other")} == {"sam"}

    wait_for(
        lambda: (r := run_of(ledger, "svc/slow")) is not None and r.state == "restarted",
        60,
        cluster,
        "svc/slow to wait in its retire grace",
    )
    before = len(audit_rows(ledger, "run.rollback"))
    code, out = keyturn(vic, "rollback", "svc/slow")
    assert code == 1 and "Permission denied: 'vic' (role: viewer)" in out, out
    assert ("vic", "permission.denied", "denied", "rollback; needs rotate") in audit_rows(
        ledger, "permission.denied"
    )
    assert len(audit_rows(ledger, "run.rollback")) == before
    assert (slow := run_of(ledger, "svc/slow")) is not None and slow.state == "restarted"

    code, out = keyturn(olivia, "rollback", "svc/slow")
    assert code == 0 and f"run {slow.id} (restarted -> rolling_back)" in out, out
    wait_for(
        lambda: (r := run_of(ledger, "svc/slow")) is not None and r.state == "failed",
        60,
        cluster,
        "the rollback to finish",
    )
    assert store(cluster).read("svc/slow").value == "initial-svc/slow-value-5d2e"
    rolled = audit_rows(ledger, "run.rollback")
    assert [(a, o) for a, _, o, _ in rolled] == [("olivia", "ok")]
    allowed = audit_rows(ledger, "request.allowed")
    assert ("olivia", "request.allowed", "ok", "rollback (signed)") in allowed

    code, out = keyturn(olivia, "resolve", "svc/stuck", "--abandon")
    assert code == 0 and f"abandoned run {stuck}" in out, out + cluster.logs()
    with ledger.sessions() as session:
        assert session.get(Run, stuck).state == "failed"  # type: ignore[union-attr]
    assert ("olivia", "run.abandon", "ok") in [r[:3] for r in audit_rows(ledger, "run.abandon")]
    # what each allowed request did is named in the trail by its verified principal
    assert [(a, d) for a, _, _, d in audit_rows(ledger, "request.allowed")] == [
        ("olivia", "rotate (signed)"),
        ("olivia", "rotate (signed)"),
        ("sam", "rotate_all (signed)"),
        ("olivia", "rollback (signed)"),
        ("olivia", "resolve (signed)"),
    ]


def stuck_run(cluster: Cluster, ledger_url: str, secret: str) -> int:
    """A run of ``secret`` that gave up at ``tested`` (its promote failing, the backend down)."""
    runtime = Runtime(Ledger(ledger_url), environ=cluster.env, worker_id="setup")
    try:
        run_id = rotate_now(runtime, secret, actor="scheduler", trigger="schedule").run_id
        engine = Engine(runtime, lease=timedelta(minutes=5))
        provider = runtime.provider(None)

        def down(*args: object, **kwargs: object) -> None:
            raise BackendUnavailable("the backend is down (test)")

        for method in ("promote", "rollback", "discard_pending"):
            setattr(provider, method, down)
        for _ in range(30):
            with runtime.ledger.sessions() as session:
                run = session.get(Run, run_id)
                assert run is not None
                state = run.state
            if state == RunState.NEEDS_ATTENTION.value:
                return run_id
            with runtime.ledger.transaction() as session:  # skip the backoff
                session.execute(update(Run).where(Run.id == run_id).values(next_attempt_at=None))
            engine.advance(run_id, state)
        raise AssertionError(f"run {run_id} did not give up: {state}")
    finally:
        runtime.close()


class Client:
    """Sends manual requests as any publisher to the broker can, and reads the answers."""

    def __init__(self, cluster: Cluster) -> None:
        self.app = Celery(broker=BROKER, backend=BROKER)
        self.app.conf.update(broker_connection_retry_on_startup=True)
        self.queue = cluster.env["KEYTURN_QUEUE"]

    def call(self, task: str, **kwargs: Any) -> dict[str, Any]:
        answer = self.app.send_task(task, kwargs=kwargs, queue=self.queue).get(timeout=60)
        assert isinstance(answer, dict)
        return answer

    def close(self) -> None:
        self.app.close()


def test_forged_replayed_and_unsigned_requests(
    cluster: Cluster, ledger_url: str, ledger: Ledger
) -> None:
    prepare(cluster, ledger_url, {"olivia": "operator", "*": "viewer"})
    olivia_env = cluster.operator_env("olivia")
    olivia = load_private_key(olivia_env["KEYTURN_OPERATOR_KEY"])
    mallory = Ed25519PrivateKey.generate()
    worker = cluster.start("worker")
    flower = start_flower(cluster, [f"--basic-auth={USER}:{PASSWORD}"], {})
    client = Client(cluster)
    try:
        now = ledger.now()
        ttl = timedelta(minutes=5)
        args = {"secret": "svc/fast"}

        # forged: olivia's name, mallory's key
        forged = sign(mallory, action="rotate", args=args, actor="olivia", now=now, ttl=ttl)
        answer = client.call("keyturn.rotate_now", secret="svc/fast", signed=forged)
        assert answer["ok"] is False and answer["error"] == "RequestRefused"
        assert "bad signature" in answer["message"]
        # forged: an unsigned message naming olivia
        answer = client.call("keyturn.rotate_now", secret="svc/fast", actor="olivia")
        assert answer["error"] == "RequestRefused"
        assert "cannot name another actor" in answer["message"]
        assert runs(ledger) == []

        # signed by olivia: allowed, recorded as hers; the same request again: a replay
        signed = sign(olivia, action="rotate", args=args, actor="olivia", now=now, ttl=ttl)
        answer = client.call("keyturn.rotate_now", secret="svc/fast", signed=signed)
        assert answer["ok"] is True and answer["principal"] == "olivia", answer
        (run,) = runs(ledger)
        assert (run.actor, run.trigger) == ("olivia", "manual")
        replay = client.call("keyturn.rotate_now", secret="svc/fast", signed=signed)
        assert replay["error"] == "RequestRefused" and "replayed" in replay["message"]

        # a key added to the keyring after the workers started counts at once: nina is
        # verified (then a viewer by "*", so refused by her role, not for her signature)
        nina = load_private_key(cluster.operator_env("nina")["KEYTURN_OPERATOR_KEY"])
        by_nina = sign(nina, action="rotate", args=args, actor="nina", now=now, ttl=ttl)
        answer = client.call("keyturn.rotate_now", secret="svc/fast", signed=by_nina)
        assert answer["error"] == "RoleDenied" and "'nina' (role: viewer)" in answer["message"]

        # an unsigned Flower call acts as `api`, which the "*" binding makes a viewer: refused
        path = "/api/task/async-apply/keyturn.rotate_now"
        status, _ = flower.call("POST", path, body={"args": ["svc/slow"]})
        assert status == 200
        wait_for(
            lambda: (
                ("api", "permission.denied", "denied", "rotate; needs rotate")
                in audit_rows(ledger, "permission.denied")
            ),
            60,
            cluster,
            "the Flower call to be refused",
        )
        assert run_of(ledger, "svc/slow") is None

        refused = audit_rows(ledger, "request.refused")
        assert [(a, o) for a, _, o, _ in refused] == [("olivia", "denied")] * 3
        reasons = [d or "" for *_, d in refused]
        assert reasons[0].startswith("rotate: bad signature")
        assert reasons[1].startswith("rotate: unsigned request claims an actor")
        assert reasons[2] == "rotate: replayed: this signed request was used before"
        assert all("svc/fast" not in r for r in reasons)

        # with a binding for `api`, the same Flower call is allowed and recorded as api's
        roles = Path(cluster.env["KEYTURN_ROLES_FILE"])
        roles.write_text(json.dumps({"bindings": {"olivia": "operator", "api": "operator"}}))
        cluster.kill(worker)
        cluster.start("worker")
        status, _ = flower.call("POST", path, body={"args": ["svc/slow"]})
        assert status == 200
        slow = wait_for(lambda: run_of(ledger, "svc/slow"), 60, cluster, "the Flower call's run")
        assert isinstance(slow, Run) and (slow.actor, slow.trigger) == ("api", "api")
        assert ("api", "request.allowed", "ok", "rotate (unsigned)") in audit_rows(
            ledger, "request.allowed"
        )
    finally:
        client.close()


def test_nonces_are_used_once_and_pruned_after_they_expire(ledger: Ledger) -> None:
    key = Ed25519PrivateKey.generate()
    now = ledger.now()
    keyring = Keyring({"olivia": key.public_key()})

    def request(at: datetime) -> SignedRequest:
        envelope = sign(
            key, action="rotate", args={}, actor="olivia", now=at, ttl=timedelta(minutes=5)
        )
        return verify(
            envelope, keyring, action="rotate", args={}, now=at, max_ttl=timedelta(minutes=5)
        )

    old, fresh = request(now - timedelta(minutes=10)), request(now)
    with ledger.transaction() as session:
        consume_nonce(session, old, now - timedelta(minutes=10))
    with ledger.transaction() as session:
        consume_nonce(session, fresh, now)  # prunes the expired one
    with ledger.sessions() as session:
        assert set(session.scalars(select(RequestNonce.nonce))) == {fresh.nonce}
    with pytest.raises(RequestRefused, match="replayed"), ledger.transaction() as session:
        consume_nonce(session, fresh, now)
