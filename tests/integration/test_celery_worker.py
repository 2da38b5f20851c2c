"""Real ``celery -A worker worker`` and ``celery -A worker beat`` processes over Redis, with a
Postgres ledger and the local store: scheduled rotations, crash recovery, redelivery."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from rotation.ledger.db import Ledger
from rotation.ledger.models import RunEvent
from rotation.values import Stage
from tests.backends.cluster import BROKER, REPO, Cluster, runs, store, wait_for

__all__ = ["BROKER", "REPO", "Cluster", "runs", "store", "wait_for"]

POLICY = """
policies:
  - name: fast-keys
    secrets: ["svc/api_key"]
    kind: random
    schedule: {{every: {every}}}
    retire_after: 1s
    max_attempts: 5
"""


def test_worker_and_beat_rotate_on_schedule(cluster: Cluster, ledger: Ledger) -> None:
    (Path(cluster.env["KEYTURN_SCHEDULES"]) / "fast.yaml").write_text(POLICY.format(every="4s"))
    store(cluster).write("svc/api_key", "initial")
    cluster.start("worker")
    cluster.start("beat")
    cluster.start("beat")  # a second beat changes nothing
    wait_for(
        lambda: len([r for r in runs(ledger) if r.state == "succeeded"]) >= 2,
        60,
        cluster,
        "two scheduled rotations",
    )
    done = [r for r in runs(ledger) if r.state == "succeeded"]
    with ledger.sessions() as session:
        for run in done:
            steps = session.scalars(
                select(RunEvent.to_state)
                .where(RunEvent.run_id == run.id, RunEvent.outcome == "ok")
                .order_by(RunEvent.id)
            ).all()
            assert steps == [
                "created",
                "applied",
                "tested",
                "promoted",
                "restarted",
                "retired",
                "succeeded",
            ]
            assert run.trigger == "schedule"
    # the interval is honoured: consecutive runs start >= 4s apart
    starts = [r.created_at for r in done]
    assert all((b - a).total_seconds() >= 3.9 for a, b in itertools.pairwise(starts))

    # a redelivered advance message for finished work does nothing
    first = done[0]
    with ledger.sessions() as session:
        events_before = session.scalar(
            select(func.count()).select_from(RunEvent).where(RunEvent.run_id == first.id)
        )
    cluster.send("keyturn.advance", first.id, "pending")
    cluster.send("keyturn.advance", first.id, "tested")
    time.sleep(3)
    with ledger.sessions() as session:
        events_after = session.scalar(
            select(func.count()).select_from(RunEvent).where(RunEvent.run_id == first.id)
        )
    assert events_after == events_before


@pytest.mark.parametrize(
    "step", ["create", "apply", "test", "promote", "restart", "retire", "finish"]
)
def test_sigkill_mid_step_then_a_new_worker_completes(
    cluster: Cluster, ledger: Ledger, step: str
) -> None:
    (Path(cluster.env["KEYTURN_SCHEDULES"]) / "fast.yaml").write_text(POLICY.format(every="30d"))
    backend = store(cluster)
    backend.write("svc/api_key", "initial")
    marker = Path(cluster.workdir) / "paused"
    doomed = cluster.start(
        "worker", {"KEYTURN_TEST_PAUSE": f"{step}:after", "KEYTURN_TEST_PAUSE_FILE": str(marker)}
    )
    cluster.start("beat")  # syncs the policy; the first 30d rotation is due at once
    wait_for(marker.exists, 45, cluster, f"the worker to pause after {step}")
    cluster.kill(doomed)  # SIGKILL the whole worker: effect done, transition not committed
    run = runs(ledger)[0]
    assert run.state != "succeeded"
    cluster.start("worker")
    wait_for(
        lambda: runs(ledger)[0].state in ("succeeded", "failed", "needs_attention"),
        60,
        cluster,
        "the run to finish after the crash",
    )
    (run,) = runs(ledger)
    assert run.state == "succeeded", run.last_error
    versions = backend.versions("svc/api_key")
    assert len(versions) == 2  # exactly one new version
    current = backend.read("svc/api_key")
    assert current.token == run.token and current.value != "initial"
    assert backend.read("svc/api_key", stage=Stage.PREVIOUS).value == "initial"
    assert not [v for v in versions if Stage.PENDING in v.stages]


DB_POLICY = """
policies:
  - name: app-db
    secret: db/app
    kind: postgres
    schedule: {{every: 90d}}
    retire_after: 1s
    consumer_cache_ttl: 0s   # no consumer caches it here (the defaults rule)
    target: {{mode: alternating, admin_secret: db/admin, connect_timeout: 3}}
"""


def test_postgres_alternating_users_through_workers(
    cluster: Cluster, ledger: Ledger, pg_database
) -> None:
    """rotate_now through Celery: the new role works, the old one is refused after retirement."""
    app = pg_database.alternating_pair("app", "first-password")
    backend = store(cluster)
    backend.write("db/admin", pg_database.admin_secret)
    backend.write("db/app", pg_database.credential(app, "first-password"))
    (Path(cluster.env["KEYTURN_SCHEDULES"]) / "db.yaml").write_text(DB_POLICY.format())
    cluster.start("worker")
    cluster.start("beat")
    wait_for(lambda: runs(ledger), 30, cluster, "the first scheduled run")
    wait_for(
        lambda: runs(ledger)[0].state in ("succeeded", "failed", "needs_attention"),
        60,
        cluster,
        "the rotation to finish",
    )
    (run,) = runs(ledger)
    assert run.state == "succeeded", run.last_error
    new = dict(backend.read("db/app").value)
    assert new["username"] == app + "_clone"
    assert pg_database.accepts(new["username"], new["password"])
    assert not pg_database.accepts(app, "first-password")  # retired

    cluster.send("keyturn.rotate_now", "db/app")  # manual trigger, as ops would from Flower
    wait_for(
        lambda: len(runs(ledger)) == 2 and runs(ledger)[1].state == "succeeded",
        60,
        cluster,
        "the manual rotation",
    )
    newer = dict(backend.read("db/app").value)
    assert newer["username"] == app and pg_database.accepts(app, newer["password"])
    assert not pg_database.accepts(new["username"], new["password"])
    assert runs(ledger)[1].actor == "api" and runs(ledger)[1].trigger == "api"
