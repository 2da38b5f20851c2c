"""Prometheus metrics from the ledger: a run driven in-process, then real HTTP scrapes of the
served endpoint (in-process with a fake clock, and the real ``keyturn metrics`` command)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from rotation.cli.metrics import serve
from rotation.ledger.db import Ledger
from rotation.ledger.models import Run
from rotation.ops.metrics import LedgerCollector
from rotation.providers.memory import MemoryProvider
from rotation.run.engine import Engine
from rotation.run.runtime import Runtime
from rotation.run.states import RunState
from rotation.scheduler.dispatcher import Dispatcher
from rotation.values import Stage

START = datetime(2026, 1, 5, 3, 0, tzinfo=UTC)
STEP_SECONDS = 3.0

POLICIES = """
policies:
  - name: api-keys
    secret: svc/api_key
    provider: memory
    kind: random
    schedule: {every: 1h}
    retire_after: 10m
  - name: frozen
    secret: svc/frozen_token
    provider: memory
    kind: random
    schedule: {every: 1h}
    paused: true
"""


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(url: str) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        body = response.read().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }
    return body, samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def backend() -> MemoryProvider:
    provider = MemoryProvider()
    provider.write("svc/api_key", "metrics-initial-api-key-5e1d")
    provider.write("svc/frozen_token", "metrics-frozen-token-90ab")
    return provider


@pytest.fixture
def driven(ledger_url: str, backend: MemoryProvider, tmp_path: Path) -> Iterator[Clock]:
    """One scheduled rotation of svc/api_key to success, each step STEP_SECONDS apart."""
    (tmp_path / "schedules").mkdir()
    (tmp_path / "schedules" / "p.yaml").write_text(POLICIES)
    clock = Clock()
    runtime = Runtime(
        Ledger(ledger_url), clock=clock, worker_id="w1", providers={"memory": backend}
    )
    engine = Engine(runtime)
    dispatcher = Dispatcher(runtime, tmp_path / "schedules")
    ((run_id, state),) = dispatcher.tick().enqueue  # the paused policy starts nothing
    for _ in range(20):
        clock.now += timedelta(seconds=STEP_SECONDS)
        outcome = engine.advance(run_id, state)
        if outcome.state in (RunState.SUCCEEDED, RunState.FAILED, RunState.NEEDS_ATTENTION):
            break
        if outcome.wait_until is not None:  # the retire grace
            clock.now = outcome.wait_until
            ((run_id, state),) = dispatcher.tick().enqueue
            clock.now -= timedelta(seconds=STEP_SECONDS)  # the retire itself then takes 3s
        else:
            state = outcome.state.value  # type: ignore[union-attr]
    with runtime.ledger.sessions() as session:
        run = session.get(Run, run_id)
    assert run is not None and run.state == "succeeded", run and run.last_error
    yield clock
    runtime.close()


def every_value(backend: MemoryProvider) -> list[str]:
    values = []
    for name in ("svc/api_key", "svc/frozen_token"):
        for stage in (Stage.CURRENT, Stage.PREVIOUS):
            try:
                values.append(str(backend.read(name, stage=stage).value))
            except Exception:
                continue
    return values


def test_scrape_reports_age_due_runs_and_steps(
    ledger_url: str, backend: MemoryProvider, driven: Clock
) -> None:
    ledger = Ledger(ledger_url)
    with ledger.sessions() as session:
        (finished,) = session.scalars(select(Run)).all()
    assert finished.finished_at is not None
    rotated_at = finished.finished_at
    driven.now = rotated_at + timedelta(minutes=15)
    server = serve(LedgerCollector(ledger, clock=driven), "127.0.0.1", 0)
    try:
        body, samples = scrape(f"http://127.0.0.1:{server.server_port}/metrics")
        api = {"secret": "svc/api_key", "policy": "api-keys"}
        frozen = {"secret": "svc/frozen_token", "policy": "frozen"}
        assert value(samples, "keyturn_ledger_up") == 1
        assert value(samples, "keyturn_secret_age_seconds", **api) == 15 * 60
        assert value(samples, "keyturn_secret_next_due_seconds", **api) == 45 * 60
        # never rotated (no age), due since the start and paused: overdue
        assert ("keyturn_secret_age_seconds", tuple(sorted(frozen.items()))) not in samples
        overdue_for = (driven.now - START).total_seconds()
        assert value(samples, "keyturn_secret_next_due_seconds", **frozen) == -overdue_for
        assert value(samples, "keyturn_overdue_secrets") == 1
        assert value(samples, "keyturn_scheduled_secrets") == 2
        # the alert on overdue secrets leaves paused policies out with this
        assert value(samples, "keyturn_policy_paused", policy="frozen") == 1
        assert value(samples, "keyturn_policy_paused", policy="api-keys") == 0
        assert value(samples, "keyturn_runs_total", state="succeeded") == 1
        assert value(samples, "keyturn_runs_total", state="failed") == 0
        assert value(samples, "keyturn_runs_needing_attention") == 0
        assert all(
            value(samples, "keyturn_runs_active", state=s) == 0
            for s in ("pending", "created", "applied", "tested", "promoted", "restarted", "retired")
        )
        # every step took 3s; the interval after the retire grace is a wait, not work
        for step in ("create", "apply", "test", "promote", "restart", "retire", "finish"):
            assert value(samples, "keyturn_step_duration_seconds_bucket", step=step, le="2.5") == 0
            assert value(samples, "keyturn_step_duration_seconds_bucket", step=step, le="5.0") == 1
            assert value(samples, "keyturn_step_duration_seconds_gsum", step=step) == STEP_SECONDS
        retire_count = value(samples, "keyturn_step_duration_seconds_gcount", step="retire")
        assert retire_count == 1  # the wait decision; its ok after the grace is excluded
        for secret_value in every_value(backend):
            assert secret_value not in body
        assert len(every_value(backend)) == 3  # api key: current + previous; frozen: current

        # a day later: the steps left the 24h window, the rotated key is overdue too
        driven.now = rotated_at + timedelta(hours=25)
        _, later = scrape(f"http://127.0.0.1:{server.server_port}/metrics")
        assert not [k for k in later if k[0].startswith("keyturn_step_duration_seconds")]
        assert value(later, "keyturn_secret_next_due_seconds", **api) == -24 * 3600
        assert value(later, "keyturn_overdue_secrets") == 2
        assert value(later, "keyturn_runs_total", state="succeeded") == 1
    finally:
        server.shutdown()
        server.server_close()
        ledger.dispose()


def test_step_window_is_bounded_by_max_events(ledger_url: str, driven: Clock) -> None:
    ledger = Ledger(ledger_url)
    try:
        collector = LedgerCollector(ledger, clock=driven, max_events=2)
        (steps,) = [m for m in collector.collect() if m.name == "keyturn_step_duration_seconds"]
        counts = {s.labels["step"]: s.value for s in steps.samples if s.name.endswith("_gcount")}
        assert counts == {"finish": 1}  # the last two events: retire ok (a wait's end), finish
    finally:
        ledger.dispose()


def test_unreachable_ledger_reports_down() -> None:
    ledger = Ledger("postgresql://keyturn:hunter2-not-printed@127.0.0.1:1/ledger")
    try:
        families = {m.name: m for m in LedgerCollector(ledger).collect()}
    finally:
        ledger.dispose()
    assert families["keyturn_ledger_up"].samples[0].value == 0
    assert set(families) == {"keyturn_ledger_up", "keyturn_scrape_duration_seconds"}


def test_keyturn_metrics_command_serves_until_sigterm(
    ledger_url: str, backend: MemoryProvider, driven: Clock
) -> None:
    port = free_port()
    keyturn = Path(sys.executable).parent / "keyturn"
    proc = subprocess.Popen(
        [str(keyturn), "metrics", "--port", str(port), "--host", "127.0.0.1"],
        env={**os.environ, "KEYTURN_DATABASE_URL": ledger_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                body, samples = scrape(f"http://127.0.0.1:{port}/metrics")
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "keyturn metrics never answered"
                time.sleep(0.2)
        assert value(samples, "keyturn_ledger_up") == 1
        assert value(samples, "keyturn_runs_total", state="succeeded") == 1
        assert value(samples, "keyturn_overdue_secrets") >= 1  # the paused one, in real time
        assert not [v for v in every_value(backend) if v in body]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert f"http://127.0.0.1:{port}/metrics" in err.decode()
    assert "postgres@" not in err.decode()  # the ledger URL is shown without its user
