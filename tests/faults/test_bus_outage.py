"""A short outage of the rollout bus only delays a rotation (issue 12, finding 2).

Real Celery workers and beat; the rollout bus is a throwaway Redis (no persistence) that the
test stops for 40 s while the run waits for acknowledgements; a pooled application counts every
failed query against a password-checking Postgres. The restart step's budget is the
``acknowledge`` timeout (time), not ``max_attempts``: the run goes on when Redis is back (and
its heartbeats, lost with it, have been re-announced) and succeeds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from rotation.ledger.db import Ledger
from rotation.ledger.models import RunEvent
from tests.backends.cluster import Cluster, runs, store, wait_for
from tests.integration.test_consumer import ThrowawayRedis
from tests.integration.test_zero_downtime import App

OUTAGE_SECONDS = 40

POLICY = """
policies:
  - name: app-db
    secret: db/app
    kind: postgres
    schedule: {every: 90d}
    retire_after: 1s
    restart: {strategy: acknowledge, timeout: 3m}
    target: {mode: alternating, admin_secret: db/admin, connect_timeout: 3}
"""


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    (tmp_path / "bus").mkdir()
    server = ThrowawayRedis(tmp_path / "bus")
    server.start()
    yield server
    server.stop()


def test_a_40s_bus_outage_during_an_acknowledge_wave_only_delays_the_run(
    cluster: Cluster, ledger: Ledger, pg_database, bus: ThrowawayRedis
) -> None:
    role = pg_database.alternating_pair("app", "first-password")
    backend = store(cluster)
    backend.write("db/admin", pg_database.admin_secret)
    backend.write("db/app", pg_database.credential(role, "first-password"))
    (Path(cluster.env["KEYTURN_SCHEDULES"]) / "db.yaml").write_text(POLICY)
    cluster.env["KEYTURN_REDIS_URL"] = bus.url
    # the callback takes a moment, so the wave is still open when the bus goes away
    app = App(cluster, "app", KEYTURN_REDIS_URL=bus.url, APP_ACK_DELAY="2")
    wait_for(lambda: app.stats().get("connected"), 30, cluster, "the application to subscribe")
    cluster.start("worker")
    cluster.start("beat")

    def waiting_for_ack() -> bool:
        with ledger.sessions() as session:
            notes = session.scalars(select(RunEvent.message).where(RunEvent.step == "restart"))
            return any("to acknowledge" in (n or "") for n in notes)

    wait_for(waiting_for_ack, 60, cluster, "the run to wait for the consumer")
    bus.stop()
    stopped = time.monotonic()
    time.sleep(OUTAGE_SECONDS)
    bus.start()
    outage, back = time.monotonic() - stopped, time.time()
    wait_for(
        lambda: runs(ledger)[0].state in ("succeeded", "failed", "needs_attention"),
        180,
        cluster,
        "the run to end",
    )
    (run,) = runs(ledger)
    final = app.stop()
    with ledger.sessions() as session:
        retries = session.scalars(
            select(RunEvent).where(
                RunEvent.run_id == run.id, RunEvent.step == "restart", RunEvent.outcome == "retry"
            )
        ).all()
    finished = run.finished_at.timestamp() - back if run.finished_at else float("nan")
    print(
        f"\nbus outage of {outage:.0f} s: {len(retries)} retried restart checks, run "
        f"{run.state} {finished:.1f} s after the bus came back, {final['failed']} failed "
        f"queries out of {final['ok']}"
    )
    assert run.state == "succeeded", run.last_error
    assert retries, "the outage was not seen by the restart step"
    assert final["failed"] == 0, final["errors"]
    assert run.to_version in {m["version"] for m in final["moves"]}
    assert not pg_database.accepts(role, "first-password")  # retired after the move
