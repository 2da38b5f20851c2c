"""``renew_before``: certificates renewed ahead of their not_after, with the expiry in the ledger.

The dispatcher reads each certificate's not_after through the backend into
``schedules.expires_at``; a ``renew_before`` schedule is due ``renew_before`` ahead of it and is
never claimed on a due time the engine left without reading the new certificate. Driven step by
step against a real Postgres ledger (the Celery path is in tests/faults/test_rotator_crashes.py
and tests/integration/test_zero_downtime_certificates.py); ``keyturn status``, ``plan`` and the
exporter show the expiry.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.core import Metric
from sqlalchemy import select, update

from rotation.ledger.db import Ledger
from rotation.ledger.models import Run, Schedule
from rotation.ops.metrics import LedgerCollector
from rotation.providers.memory import MemoryProvider
from rotation.rotators.certificate.bundle import not_after_of
from rotation.run.engine import Engine
from rotation.run.runtime import Runtime
from rotation.scheduler.dispatcher import Dispatcher
from tests.backends.certs import InternalCaCerts
from tests.integration.test_engine import Clock, drive, write_policy

POLICY = """
policies:
  - name: certs
    secrets: ["tls/*"]
    provider: memory
    kind: certificate
    schedule: {renew_before: 30d}
    target: {issuer: internal, ca_secret: ca/internal, ttl: 90d}
"""


@pytest.fixture
def ca() -> InternalCaCerts:
    return InternalCaCerts()


@pytest.fixture
def backend(ca: InternalCaCerts) -> MemoryProvider:
    provider = MemoryProvider()
    provider.write("ca/internal", ca.ca)
    return provider


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime.now(UTC))  # certificates are issued on the host's clock


class Setup:
    def __init__(self, ledger_url: str, backend: MemoryProvider, clock: Clock, tmp: Path) -> None:
        self.schedules = tmp / "schedules"
        write_policy(self.schedules, POLICY)
        self.clock, self.backend = clock, backend
        self.runtime = Runtime(
            Ledger(ledger_url), clock=clock, worker_id="w1", providers={"memory": backend}
        )
        self.engine = Engine(self.runtime, lease=timedelta(minutes=5))
        self.dispatcher = Dispatcher(self.runtime, self.schedules)

    def schedule(self, secret: str) -> Schedule:
        with self.runtime.ledger.sessions() as session:
            found = session.get(Schedule, secret)
            assert found is not None
            return found

    def runs(self, secret: str) -> list[Run]:
        with self.runtime.ledger.sessions() as session:
            return list(session.scalars(select(Run).where(Run.secret == secret)))

    def close(self) -> None:
        self.runtime.ledger.dispose()


@pytest.fixture
def setup(ledger_url: str, backend: MemoryProvider, clock: Clock, tmp_path: Path):
    instance = Setup(ledger_url, backend, clock, tmp_path)
    yield instance
    instance.close()


def _expires(value: object) -> datetime:
    found = not_after_of(value)  # type: ignore[arg-type]
    assert found is not None
    return found


def test_a_certificate_is_due_renew_before_its_not_after(setup: Setup, ca: InternalCaCerts):
    setup.backend.write("tls/far", ca.issue(lifetime=timedelta(days=60)))
    setup.backend.write("tls/near", ca.issue(lifetime=timedelta(days=10)))
    report = setup.dispatcher.tick()

    assert report.expiries_read == 2
    far = setup.schedule("tls/far")
    far_expiry = _expires(setup.backend.read("tls/far").value)
    assert far.expires_at == far_expiry
    assert far.next_due_at == far_expiry - timedelta(days=30)  # no run: 30 days to go
    assert setup.runs("tls/far") == []
    (run,) = setup.runs("tls/near")  # 10 days left: renewed now
    assert run.trigger == "schedule" and report.started == 1


def test_after_a_renewal_the_next_is_due_from_the_new_certificate(
    setup: Setup, ca: InternalCaCerts
):
    setup.backend.write("tls/api", ca.issue(lifetime=timedelta(days=10)))
    report = setup.dispatcher.tick()
    (run_id, state) = report.enqueue[0]
    old_expiry = _expires(setup.backend.read("tls/api").value)
    drive(setup.engine, run_id, state, setup.clock, setup.dispatcher)
    (run,) = setup.runs("tls/api")
    assert run.state == "succeeded", run.last_error
    new_expiry = _expires(setup.backend.read("tls/api").value)
    assert new_expiry - old_expiry > timedelta(days=70)  # the policy's 90d ttl

    # the engine ended the run without reading the new certificate: its due time is
    # provisional, and the schedule is not claimed on it
    provisional = setup.schedule("tls/api")
    assert provisional.expiry_checked_at is not None
    assert provisional.last_rotated_at is not None
    assert provisional.expiry_checked_at <= provisional.last_rotated_at
    assert setup.dispatcher.start_due_runs(setup.clock()) == []

    setup.clock.advance(seconds=5)
    setup.dispatcher.tick()
    schedule = setup.schedule("tls/api")
    assert schedule.expires_at == new_expiry
    assert schedule.next_due_at is not None
    assert abs(schedule.next_due_at - (new_expiry - timedelta(days=30))) < timedelta(minutes=1)
    assert len(setup.runs("tls/api")) == 1  # renewed once


def test_a_short_lived_certificate_renews_at_two_thirds_of_its_life(
    setup: Setup, ca: InternalCaCerts, tmp_path: Path
):
    write_policy(setup.schedules, POLICY.replace("ttl: 90d", "ttl: 3d"))
    setup.backend.write("tls/short", ca.issue(lifetime=timedelta(days=1)))
    report = setup.dispatcher.tick()
    drive(setup.engine, *report.enqueue[0], setup.clock, setup.dispatcher)
    setup.dispatcher.tick()
    schedule = setup.schedule("tls/short")
    assert schedule.last_rotated_at is not None and schedule.expires_at is not None
    life = schedule.expires_at - schedule.last_rotated_at
    assert life < timedelta(days=30)  # shorter than renew_before: never due at once
    assert schedule.next_due_at is not None
    due = schedule.last_rotated_at + life * 2 / 3
    assert abs(schedule.next_due_at - due) < timedelta(seconds=1)
    assert len(setup.runs("tls/short")) == 1


def test_a_certificate_replaced_by_hand_is_noticed(setup: Setup, ca: InternalCaCerts):
    setup.backend.write("tls/web", ca.issue(lifetime=timedelta(days=60)))
    setup.dispatcher.tick()
    replaced = ca.issue(lifetime=timedelta(days=45))
    setup.backend.write("tls/web", replaced)
    setup.dispatcher.tick()
    assert setup.schedule("tls/web").expires_at != _expires(replaced)  # read 10 minutes ago
    setup.clock.advance(minutes=11)
    setup.dispatcher.tick()
    schedule = setup.schedule("tls/web")
    assert schedule.expires_at == _expires(replaced)
    assert schedule.next_due_at == _expires(replaced) - timedelta(days=30)


def test_an_unreadable_expiry_never_stops_the_tick(setup: Setup, ca: InternalCaCerts):
    setup.backend.write("tls/broken", {"certificate": "not a PEM", "private_key": "x"})
    setup.backend.write("tls/good", ca.issue(lifetime=timedelta(days=60)))
    setup.dispatcher.tick()
    assert setup.schedule("tls/broken").expires_at is None
    assert setup.schedule("tls/broken").expiry_checked_at is not None
    assert setup.schedule("tls/good").expires_at is not None
    # unknown expiry, renew_before alone: due, and the run says what is wrong
    (run,) = setup.runs("tls/broken")
    assert setup.runs("tls/good") == []
    assert run.state == "pending"


def _family(metrics: list[Metric], name: str) -> dict[str, float]:
    (family,) = [m for m in metrics if m.name == name]
    return {sample.labels["secret"]: sample.value for sample in family.samples}


def test_status_plan_and_metrics_show_days_to_expiry(
    setup: Setup, ca: InternalCaCerts, ledger_url: str, monkeypatch: pytest.MonkeyPatch
):
    from rotation.cli.app import main as cli

    setup.backend.write("tls/far", ca.issue(lifetime=timedelta(days=60)))
    setup.dispatcher.tick()
    now = setup.clock()

    metrics = list(LedgerCollector(setup.runtime.ledger, clock=setup.clock).collect())
    seconds = _family(metrics, "keyturn_certificate_expiry_seconds")
    assert seconds["tls/far"] == pytest.approx(timedelta(days=60).total_seconds(), abs=5)

    monkeypatch.setenv("KEYTURN_DATABASE_URL", ledger_url)
    status = CliRunner().invoke(cli, ["status", "--json"])
    (row,) = json.loads(status.output)
    assert row["expires_in_days"] == pytest.approx(60, abs=0.1)
    shown = CliRunner().invoke(cli, ["status"], env={"COLUMNS": "250"})
    assert "expires" in shown.output and "(60 days)" in shown.output

    plan = CliRunner().invoke(cli, ["plan", "--days", "120", "--json"])
    rotations = json.loads(plan.output)["rotations"]
    # never renewed yet: how long a new certificate lives is unknown, so only the first shows
    assert [r["secret"] for r in rotations] == ["tls/far"]
    first = datetime.fromisoformat(rotations[0]["at"].replace("Z", "+00:00"))
    assert first - now == pytest.approx(timedelta(days=30), abs=timedelta(minutes=10))
    assert rotations[0]["renews_expiry_at"] is not None
    text = CliRunner().invoke(cli, ["plan", "--days", "120"], env={"COLUMNS": "250"})
    assert "renewal" in text.output and "tls/far" in text.output


def test_expired_certificate_shows_negative_seconds(setup: Setup, ca: InternalCaCerts):
    setup.backend.write("tls/old", ca.issue(lifetime=timedelta(days=60)))
    setup.dispatcher.tick()
    with setup.runtime.ledger.transaction() as session:
        session.execute(
            update(Schedule)
            .where(Schedule.secret == "tls/old")
            .values(expires_at=setup.clock() - timedelta(days=1))
        )
    metrics = list(LedgerCollector(setup.runtime.ledger, clock=setup.clock).collect())
    assert _family(metrics, "keyturn_certificate_expiry_seconds")["tls/old"] < 0
