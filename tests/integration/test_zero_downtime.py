"""The zero-downtime proof: an application with a connection pool keeps querying a
password-checking Postgres while real workers rotate its credential (alternating users,
acknowledge restart) back to back; and a consumer killed mid-rotation stops blocking it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import select

from rotation.ledger.db import Ledger
from rotation.ledger.models import Run, RunEvent
from tests.backends.cluster import BROKER, REPO, Cluster, runs, store, wait_for

POLICY = """
policies:
  - name: app-db
    secret: db/app
    kind: postgres
    schedule: {every: 90d}
    retire_after: 1s
    restart: {strategy: acknowledge, timeout: 2m}
    target: {mode: alternating, admin_secret: db/admin, connect_timeout: 3}
"""


class App:
    """The consumer application process."""

    def __init__(self, cluster: Cluster, name: str, **env: str) -> None:
        self.stats_path = cluster.workdir / f"{name}.json"
        self.stop_path = cluster.workdir / f"{name}.stop"
        log = open(cluster.workdir / f"{name}.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.apps.pool_app"],
            env={
                **cluster.env,
                "KEYTURN_REDIS_URL": BROKER,
                "SECRETS_CACHE_TTL": "300",
                "APP_SECRET": "db/app",
                "APP_STATS": str(self.stats_path),
                "APP_STOP": str(self.stop_path),
                **env,
            },
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def stats(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.stats_path.read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    def stop(self) -> dict[str, Any]:
        self.stop_path.touch()
        self.proc.wait(30)
        return self.stats()

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def setup_database(cluster: Cluster, pg_database) -> str:
    app = pg_database.alternating_pair("app", "first-password")
    backend = store(cluster)
    backend.write("db/admin", pg_database.admin_secret)
    backend.write("db/app", pg_database.credential(app, "first-password"))
    (Path(cluster.env["KEYTURN_SCHEDULES"]) / "db.yaml").write_text(POLICY)
    return app


def retire_time(ledger: Ledger, run_id: int) -> float:
    with ledger.sessions() as session:
        event = session.scalars(
            select(RunEvent).where(
                RunEvent.run_id == run_id, RunEvent.step == "retire", RunEvent.outcome == "ok"
            )
        ).one()
    return event.at.timestamp()


def test_five_rotations_under_load_fail_no_query(cluster: Cluster, ledger: Ledger, pg_database):
    setup_database(cluster, pg_database)
    backend = store(cluster)
    app = App(cluster, "app")
    wait_for(
        lambda: app.stats().get("ok", 0) > 50 and app.stats().get("connected"),
        30,
        cluster,
        "the application to run",
    )
    cluster.start("worker")
    cluster.start("beat")
    olds: list[dict[str, Any]] = []
    for n in range(5):
        olds.append(dict(backend.read("db/app").value))
        if n > 0:  # the first rotation is the scheduled one (never rotated: due at once)
            cluster.send("keyturn.rotate_now", "db/app")
        wait_for(
            lambda n=n: len(runs(ledger)) == n + 1 and runs(ledger)[n].state == "succeeded",
            90,
            cluster,
            f"rotation {n + 1} to succeed",
        )
        old = olds[-1]
        assert not pg_database.accepts(old["username"], old["password"])  # retired
    final = app.stop()
    elapsed = final["stopped"] - final["started"]
    print(
        f"\nzero-downtime: {final['ok']} queries in {elapsed:.1f}s "
        f"({final['ok'] / elapsed:.0f}/s) across 5 rotations, {final['failed']} failed"
    )
    assert final["failed"] == 0, final["errors"]
    assert final["ok"] / elapsed >= 100, (final["ok"], elapsed)
    moves = {m["version"]: m["at"] for m in final["moves"]}
    for run in runs(ledger):
        assert run.state == "succeeded", run.last_error
        assert run.to_version in moves, "the consumer never acknowledged this version"
        assert moves[run.to_version] < retire_time(ledger, run.id)
    current = dict(backend.read("db/app").value)
    assert pg_database.accepts(current["username"], current["password"])
    assert final["user"] == current["username"]


def test_a_consumer_killed_mid_rotation_stops_counting(
    cluster: Cluster, ledger: Ledger, pg_database
):
    setup_database(cluster, pg_database)
    backend = store(cluster)
    app = App(cluster, "stuck", APP_ACK_DELAY="120", APP_HEARTBEAT="2")
    wait_for(lambda: app.stats().get("connected"), 30, cluster, "the application to subscribe")
    cluster.start("worker")
    cluster.start("beat")

    def waiting_for_ack() -> bool:
        with ledger.sessions() as session:
            notes = session.scalars(select(RunEvent.message).where(RunEvent.step == "restart"))
            return any("to acknowledge" in (n or "") for n in notes)

    wait_for(waiting_for_ack, 60, cluster, "the run to wait for the consumer")
    app.kill()  # mid-rotation: its pool rebuild never finishes, it never acknowledges
    wait_for(
        lambda: runs(ledger)[0].state in ("succeeded", "failed", "needs_attention"),
        60,
        cluster,
        "the run to proceed once the heartbeat lapsed",
    )
    (run,) = runs(ledger)
    assert run.state == "succeeded", run.last_error
    current = dict(backend.read("db/app").value)
    restarted = App(cluster, "restarted")
    wait_for(lambda: restarted.stats().get("ok", 0) > 20, 30, cluster, "the restarted consumer")
    stats = restarted.stop()
    assert stats["failed"] == 0 and stats["user"] == current["username"]
    assert isinstance(run, Run)
