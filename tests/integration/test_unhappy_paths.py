"""Zero downtime on the unhappy paths (issue 12), through real Celery workers, a real Redis
(the rollout bus) and a password-checking Postgres, with pooled applications counting every
failed query (tests/apps/pool_app.py).

- A rollback after promotion is announced like the promotion: every consumer moves back before
  the abandoned credential is revoked (0 failed queries).
- A single user's undo logs in with the run's own password when there is no admin: the
  database and the backend agree at the end of the run.
- The single-user denial window, measured (docs/rotators.md quotes it).
"""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import select

from rotation.errors import SecretNotFound
from rotation.ledger.db import Ledger
from rotation.ledger.models import RunEvent
from rotation.values import Stage
from tests.backends.cluster import Cluster, runs, store, wait_for
from tests.integration.test_zero_downtime import App

FINAL = ("succeeded", "failed", "needs_attention")


def write_policy(cluster: Cluster, body: str) -> None:
    (Path(cluster.env["KEYTURN_SCHEDULES"]) / "db.yaml").write_text(body)


def running(app: App) -> bool:
    stats = app.stats()
    return bool(stats.get("ok", 0) > 50 and stats.get("connected"))


def finished(ledger: Ledger) -> bool:
    found = runs(ledger)
    return bool(found) and found[0].state in FINAL


def test_a_rollback_after_promotion_moves_every_consumer_back(
    cluster: Cluster, ledger: Ledger, pg_database
) -> None:
    """Consumer A moves to the new role; consumer B's callback raises. The run rolls back, and
    tells both: A moves back before the abandoned role is scrambled, so nobody fails."""
    role = pg_database.alternating_pair("app", "first-password")
    backend = store(cluster)
    backend.write("db/admin", pg_database.admin_secret)
    old = pg_database.credential(role, "first-password")
    backend.write("db/app", old)
    write_policy(
        cluster,
        """
policies:
  - name: app-db
    secret: db/app
    kind: postgres
    schedule: {every: 90d}
    retire_after: 1s
    restart: {strategy: acknowledge, timeout: 1m}
    target: {mode: alternating, admin_secret: db/admin, connect_timeout: 3}
""",
    )
    a = App(cluster, "a")
    b = App(cluster, "b", APP_REFUSE_USER=f"{role}_clone")
    for app in (a, b):
        wait_for(lambda app=app: running(app), 30, cluster, "the applications to run")
    cluster.start("worker")
    cluster.start("beat")
    wait_for(lambda: finished(ledger), 90, cluster, "the run to end")
    (run,) = runs(ledger)
    time.sleep(1.5)  # both applications keep querying after the end: still nobody fails
    stats = {"a": a.stop(), "b": b.stop()}

    assert run.state == "failed", run.last_error
    assert "PermissionError" in (run.last_error or "") and "rolled back" in (run.last_error or "")
    for name, final in stats.items():
        assert final["failed"] == 0, (name, final["errors"])
        assert final["user"] == role, f"consumer {name} was left on {final['user']}"
    assert dict(backend.read("db/app").value) == old  # the old credential is current
    assert pg_database.accepts(role, "first-password")  # and works
    abandoned = backend.read("db/app", stage=Stage.PREVIOUS)
    assert abandoned.token == run.token
    new = dict(abandoned.value)
    assert new["username"] == f"{role}_clone"
    assert not pg_database.accepts(new["username"], new["password"])  # revoked, after the move
    back = [m for m in stats["a"]["moves"] if m["rollback_of"] == run.to_version]
    assert back and back[0]["user"] == role  # A heard the rollback and moved back


def test_a_single_user_rollback_sets_the_password_back_then_moves_consumers_back(
    cluster: Cluster, ledger: Ledger, pg_database
) -> None:
    """A single user has no second credential: the rollback sets the old password back at
    once (undoing later would leave the backend's current value refused), then announces it;
    every consumer ends on the old password, which works, and the abandoned one is refused."""
    role = pg_database.alternating_pair("app", "first-password")
    backend = store(cluster)
    old = pg_database.credential(role, "first-password")
    backend.write("db/app", old)
    write_policy(
        cluster,
        """
policies:
  - name: app-db
    secret: db/app
    kind: postgres
    schedule: {every: 90d}
    restart: {strategy: acknowledge, timeout: 1m}
    target: {mode: single, connect_timeout: 3}
""",
    )
    a = App(cluster, "a", APP_LOGIN_EVERY="0.01")
    b = App(cluster, "b", APP_REFUSE_PROMOTIONS="1")
    for app in (a, b):
        wait_for(lambda app=app: running(app), 30, cluster, "the applications to run")
    cluster.start("worker")
    cluster.start("beat")
    wait_for(lambda: finished(ledger), 90, cluster, "the run to end")
    (run,) = runs(ledger)
    time.sleep(1.5)
    before = a.stats()
    time.sleep(2)
    stats = {"a": a.stop(), "b": b.stop()}
    assert run.state == "failed", run.last_error
    assert "the target accepts it again" in (run.last_error or "")
    assert dict(backend.read("db/app").value) == old
    assert pg_database.accepts(role, "first-password")
    abandoned = dict(backend.read("db/app", stage=Stage.PREVIOUS).value)
    assert not pg_database.accepts(role, abandoned["password"])
    for name, final in stats.items():
        assert final["user"] == role, name
    back = [m for m in stats["a"]["moves"] if m["rollback_of"] == run.to_version]
    assert back, "consumer a never heard the rollback"
    # new logins failed only while the consumer was between versions, never after
    assert stats["a"]["login_failed"] == before["login_failed"]
    assert stats["a"]["failed"] == before["failed"]


def test_single_user_undo_logs_in_with_the_pending_password(
    cluster: Cluster, ledger: Ledger, pg_database
) -> None:
    """No admin_secret; attempts run out at ``test`` after ``apply`` changed the password (a
    worker killed there). The undo logs in with the run's own password and sets the old one
    back: the database accepts what the backend says is current, and the application recovers."""
    role = pg_database.alternating_pair("app", "first-password")
    backend = store(cluster)
    old = pg_database.credential(role, "first-password")
    backend.write("db/app", old)
    write_policy(
        cluster,
        """
policies:
  - name: app-db
    secret: db/app
    kind: postgres
    schedule: {every: 90d}
    max_attempts: 1
    restart: {strategy: acknowledge, timeout: 1m}
    target: {mode: single, connect_timeout: 3}
""",
    )
    app = App(cluster, "app")
    wait_for(lambda: running(app), 30, cluster, "the application to run")
    marker = cluster.workdir / "paused"
    parked = cluster.start(
        "worker", {"KEYTURN_TEST_PAUSE": "test:before", "KEYTURN_TEST_PAUSE_FILE": str(marker)}
    )
    cluster.start("beat")
    wait_for(marker.exists, 60, cluster, "the worker to park before test (after apply)")
    assert not pg_database.accepts(role, "first-password")  # apply changed it
    cluster.kill(parked)
    marker.unlink()
    cluster.start("worker", {"KEYTURN_TEST_PAUSE": ""})
    wait_for(lambda: finished(ledger), 90, cluster, "the run to end")
    (run,) = runs(ledger)

    assert run.state == "needs_attention", run.last_error
    assert "attempts exhausted at step test" in (run.last_error or "")
    assert "rolled back" in (run.last_error or ""), run.last_error
    assert dict(backend.read("db/app").value) == old
    assert pg_database.accepts(role, "first-password")  # the database agrees with the backend
    try:
        pending = backend.read("db/app", stage=Stage.PENDING)
    except SecretNotFound:
        pending = None
    assert pending is None  # discarded, after the undo that needed it
    time.sleep(1.5)  # the application's figures are written twice a second
    before = app.stats()
    time.sleep(3)
    after = app.stop()
    assert after["failed"] == before["failed"] and after["ok"] > before["ok"] + 100


def test_single_user_denial_window(cluster: Cluster, ledger: Ledger, pg_database) -> None:
    """Single user, acknowledge: new logins with the old password fail from ``apply`` until the
    consumer moved. Measured with a fresh login every 10 ms and printed; docs/rotators.md
    quotes the figure."""
    role = pg_database.alternating_pair("app", "first-password")
    backend = store(cluster)
    backend.write("db/app", pg_database.credential(role, "first-password"))
    write_policy(
        cluster,
        """
policies:
  - name: app-db
    secret: db/app
    kind: postgres
    schedule: {every: 90d}
    restart: {strategy: acknowledge, timeout: 1m}
    target: {mode: single, connect_timeout: 3}
""",
    )
    app = App(cluster, "app", APP_LOGIN_EVERY="0.01")
    wait_for(lambda: running(app), 30, cluster, "the application to run")
    cluster.start("worker")
    cluster.start("beat")
    wait_for(lambda: finished(ledger), 90, cluster, "the run to end")
    (run,) = runs(ledger)
    time.sleep(1)
    final = app.stop()
    assert run.state == "succeeded", run.last_error
    with ledger.sessions() as session:
        applied = session.scalar(
            select(RunEvent.at).where(
                RunEvent.run_id == run.id, RunEvent.step == "apply", RunEvent.outcome == "ok"
            )
        )
    assert applied is not None
    moved = final["moves"][0]["at"]
    denied = final["last_login_failure"] - final["first_login_failure"]
    elapsed = final["stopped"] - final["started"]
    print(
        f"\nsingle-user denial window: new logins failed for {denied:.2f} s "
        f"({final['login_failed']} of {final['logins'] + final['login_failed']} logins, one "
        f"every 10 ms); apply committed {moved - applied.timestamp():.2f} s before the "
        f"consumer moved; pooled queries: {final['failed']} failed of {final['ok']} "
        f"({final['ok'] / elapsed:.0f}/s)"
    )
    assert final["login_failed"] > 0  # not zero-downtime: new logins fail for a while
    assert final["last_login_failure"] <= moved + 0.1  # until the consumer moved, no longer
    current = dict(backend.read("db/app").value)
    assert final["user"] == role and pg_database.accepts(role, current["password"])
