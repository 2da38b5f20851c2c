"""A backend's throttling is a wait, not a failed try: the engine gives the attempt back and
tries again after a backoff, up to ``KEYTURN_THROTTLED_MAX_SECONDS`` (then the run needs
attention, saying it was throttled). Real Postgres ledger, driven step by step."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from rotation.errors import Throttled
from rotation.ledger.db import Ledger
from rotation.ledger.models import RunEvent
from rotation.providers.memory import MemoryProvider
from rotation.run.engine import Engine
from rotation.values import SecretValue, Stage
from tests.integration.test_engine import (
    Clock,
    _dispose_runtimes,
    clock,
    drive,
    make,
    run_row,
    schedules,
)

__all__ = ["_dispose_runtimes", "clock", "schedules"]  # fixtures


class ThrottlingProvider(MemoryProvider):
    """Answers ``Throttled`` to the first ``refusals`` pending writes, then works."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals
        self.tries = 0

    def stage_pending(self, name: str, value: SecretValue, *, token: str) -> str:
        self.tries += 1
        if self.tries <= self.refusals:
            raise Throttled("429 Too Many Requests (test)")
        return super().stage_pending(name, value, token=token)


def outcomes(ledger_url: str, run_id: int) -> list[tuple[str, int]]:
    ledger = Ledger(ledger_url)
    try:
        with ledger.sessions() as session:
            rows = session.execute(
                select(RunEvent.outcome, RunEvent.attempt)
                .where(RunEvent.run_id == run_id)
                .order_by(RunEvent.id)
            ).all()
        return [(outcome, attempt) for outcome, attempt in rows]
    finally:
        ledger.dispose()


def test_throttled_tries_spend_no_attempt(ledger_url: str, clock: Clock, schedules: Path) -> None:
    """Ten throttled tries of a policy with max_attempts 3: the run succeeds, one new version."""
    backend = ThrottlingProvider(refusals=10)
    backend.write("api_key_ncbi", "initial")
    _, engine, dispatcher = make(ledger_url, backend, clock, schedules)
    run_id, state = dispatcher.tick().enqueue[0]
    drive(engine, run_id, state, clock, dispatcher)

    run = run_row(ledger_url, run_id)
    assert run.state == "succeeded", run.last_error
    events = outcomes(ledger_url, run_id)
    throttled = [attempt for outcome, attempt in events if outcome == "throttled"]
    assert len(throttled) == 10
    assert set(throttled) == {1}  # every try was the first: the attempt was given back
    assert "retry" not in [outcome for outcome, _ in events]
    assert len(backend.versions("api_key_ncbi")) == 2  # exactly one new version
    assert backend.read("api_key_ncbi").value != "initial"


def test_throttling_past_the_bound_needs_attention(
    ledger_url: str, clock: Clock, schedules: Path
) -> None:
    """A backend that never stops throttling: the run stops after the bound, says why, and
    nothing is left pending."""
    backend = ThrottlingProvider(refusals=1_000_000)
    backend.write("api_key_ncbi", "initial")
    runtime, _, dispatcher = make(ledger_url, backend, clock, schedules)
    engine = Engine(runtime, lease=timedelta(minutes=5), throttled_max=timedelta(minutes=10))
    run_id, state = dispatcher.tick().enqueue[0]
    started = clock.now
    drive(engine, run_id, state, clock, dispatcher)

    run = run_row(ledger_url, run_id)
    assert run.state == "needs_attention"
    assert "throttled by the backend for more than 10m" in (run.last_error or "")
    assert timedelta(minutes=10) <= clock.now - started <= timedelta(minutes=12)
    throttled = [outcome for outcome, _ in outcomes(ledger_url, run_id) if outcome == "throttled"]
    assert len(throttled) >= 3  # more tries than max_attempts, yet bounded by time
    assert backend.read("api_key_ncbi").value == "initial"
    assert not [v for v in backend.versions("api_key_ncbi") if Stage.PENDING in v.stages]
