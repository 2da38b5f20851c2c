"""Restart strategies and notifications, through the engine with a real Postgres ledger and a
real Redis (the rollout bus); consumers are real ConsumerAgents over the same Redis."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from sqlalchemy import select

from rotation import SecretsManager
from rotation.client.events import RotationEvent
from rotation.ledger.models import Run, RunEvent
from rotation.providers.memory import MemoryProvider
from rotation.rollout import ACK_RETENTION_SECONDS, Announcement, RolloutBus
from tests.integration.test_engine import Clock, drive, make, write_policy

REDIS = "redis://127.0.0.1:6379/0"
#: The test's receivers listen on loopback, which a webhook may call only when allowed.
LOOPBACK = "allow_networks: [127.0.0.0/8]"


def policy(secret: str, restart: str, name: str = "p", extra: str = "") -> str:
    return f"""
policies:
  - name: {name}
    secrets: ["{secret}"]
    provider: memory
    kind: random
    schedule: {{every: 30d}}
    retire_after: 0s
    max_attempts: 3
    restart: {restart}
{extra}"""


@pytest.fixture
def secret() -> str:
    return f"svc_{uuid.uuid4().hex[:8]}/api_key"


@pytest.fixture
def backend(secret: str) -> MemoryProvider:
    provider = MemoryProvider()
    provider.write(secret, "initial")
    provider.write("hooks/key", "hmac-key-for-tests")
    return provider


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYTURN_REDIS_URL", REDIS)


def start_run(ledger_url, backend, tmp_path: Path, body: str, clock: Clock | None = None):
    clock = clock or Clock()
    schedules = write_policy(tmp_path / "schedules", body).parent
    runtime, engine, dispatcher = make(ledger_url, backend, clock, schedules)
    report = dispatcher.tick()
    return runtime, engine, dispatcher, clock, report.enqueue


def events(runtime, run_id: int) -> list[RunEvent]:
    with runtime.ledger.sessions() as session:
        return list(
            session.scalars(select(RunEvent).where(RunEvent.run_id == run_id).order_by(RunEvent.id))
        )


def run_state(runtime, run_id: int) -> Run:
    with runtime.ledger.sessions() as session:
        run = session.get(Run, run_id)
        assert run is not None
        return run


def advance_until_waiting(engine, run_id: int, state: str) -> str:
    queue = [(run_id, state)]
    last = state
    while queue:
        outcome = engine.advance(*queue.pop())
        if outcome.state is not None:
            last = outcome.state.value
        if outcome.enqueue and outcome.state is not None:
            queue.append((run_id, outcome.state.value))
    return last


@pytest.fixture
def consumer(backend: MemoryProvider, secret: str) -> Iterator[SecretsManager]:
    manager = SecretsManager(backend, cache_ttl=300)
    manager.get(secret)
    yield manager
    manager.close()


def test_acknowledge_waits_for_live_consumers(
    env, ledger_url, backend, secret, consumer, tmp_path
) -> None:
    moved: list[RotationEvent] = []

    def rebuild_pool(event: RotationEvent) -> None:
        time.sleep(0.5)  # a pool rebuild takes a moment: the engine must wait for it
        moved.append(event)

    consumer.on_rotate(secret, rebuild_pool)
    agent = consumer.subscribe(REDIS, heartbeat_ttl=3)
    assert agent.connected.wait(5)
    time.sleep(0.3)  # first heartbeat
    runtime, engine, dispatcher, clock, enqueue = start_run(
        ledger_url, backend, tmp_path, policy(secret, "{strategy: acknowledge, timeout: 1m}")
    )
    ((run_id, state),) = enqueue
    assert consumer.get(secret) == "initial"
    assert advance_until_waiting(engine, run_id, state) == "promoted"
    wait = run_state(runtime, run_id)
    assert (
        wait.next_attempt_at is not None
        and "waiting for 1 of 1" in events(runtime, run_id)[-1].message
    )
    deadline = time.monotonic() + 10
    while not moved and time.monotonic() < deadline:
        time.sleep(0.05)
    assert moved and moved[0].secret == secret
    # the consumer dropped its cache entry before acknowledging
    assert consumer.get(secret) == backend.read(secret).value != "initial"
    drive(engine, run_id, "promoted", clock, dispatcher)
    run = run_state(runtime, run_id)
    assert run.state == "succeeded"
    restart_ok = [e for e in events(runtime, run_id) if e.step == "restart" and e.outcome == "ok"]
    assert "1 consumer(s) acknowledged" in (restart_ok[0].message or "")
    # nothing outlives the run on the bus: the acknowledgements expire within the retention,
    # and a late answer to a duplicate announcement (the engine re-publishes at every check)
    # lands in the expiring hash without extending it
    bus = RolloutBus(REDIS)
    promotion = Announcement(secret, run.to_version or "", run_id)
    key = bus.ack_key(promotion)
    assert 0 < bus.client.ttl(key) <= ACK_RETENTION_SECONDS
    bus.publish(promotion)
    time.sleep(0.5)
    assert bus.acks(promotion) == {agent.consumer_id: "ok"}
    assert 0 < bus.client.ttl(key) <= ACK_RETENTION_SECONDS
    bus.close()


def test_a_failing_consumer_rolls_the_promotion_back(
    env, ledger_url, backend, secret, consumer, tmp_path
) -> None:
    """The consumer cannot use the new value: the promotion is rolled back, and the rollback is
    announced to it (it moves back and acknowledges) before the run ends."""
    heard: list[RotationEvent] = []

    def broken_pool(event: RotationEvent) -> None:
        heard.append(event)
        if event.rollback_of is None:
            raise ConnectionError("cannot log in with the new credential")

    consumer.on_rotate(secret, broken_pool)
    assert consumer.subscribe(REDIS, heartbeat_ttl=3).connected.wait(5)
    time.sleep(0.3)
    runtime, engine, dispatcher, clock, enqueue = start_run(
        ledger_url, backend, tmp_path, policy(secret, "{strategy: acknowledge, timeout: 1m}")
    )
    ((run_id, _state),) = enqueue
    for _ in range(50):
        advance_until_waiting(engine, run_id, run_state(runtime, run_id).state)
        if run_state(runtime, run_id).state in ("failed", "needs_attention"):
            break
        time.sleep(0.1)
        clock.advance(seconds=2)
        dispatcher.tick()
    run = run_state(runtime, run_id)
    assert run.state == "failed"
    assert (
        "ConnectionError" in (run.last_error or "")
        and "previous version is current" in run.last_error
        and "1 consumer(s) acknowledged the rollback" in run.last_error
    )
    assert backend.read(secret).value == "initial"  # rolled back while both were valid
    assert [e.rollback_of for e in heard] == [None, run.to_version]
    assert heard[-1].version == run.from_version
    assert consumer.get(secret) == "initial"
    steps = [(e.step, e.to_state, e.outcome) for e in events(runtime, run_id)]
    assert ("restart", "rolling_back", "rollback") in steps
    assert steps[-1] == ("rollback", "failed", "rollback")


def test_a_dead_consumer_stops_counting_when_its_heartbeat_lapses(
    env, ledger_url, backend, secret, tmp_path
) -> None:
    bus = RolloutBus(REDIS)
    bus.heartbeat("ghost", [secret], ttl=2, info={})
    runtime, engine, dispatcher, clock, enqueue = start_run(
        ledger_url, backend, tmp_path, policy(secret, "{strategy: acknowledge, timeout: 1m}")
    )
    ((run_id, state),) = enqueue
    assert advance_until_waiting(engine, run_id, state) == "promoted"
    assert bus.live_consumers(secret) == ["ghost"]
    time.sleep(2.2)  # the heartbeat lapses in real time (Redis keeps the expiry)
    clock.advance(seconds=2)
    drive(engine, run_id, "promoted", clock, dispatcher)
    assert run_state(runtime, run_id).state == "succeeded"
    bus.close()


@pytest.mark.parametrize(
    "on_timeout, final", [("fail", "needs_attention"), ("proceed", "succeeded")]
)
def test_acknowledge_timeout(env, ledger_url, backend, secret, tmp_path, on_timeout, final) -> None:
    """A consumer that never answers: with ``fail`` the promotion is rolled back, and the
    rollback, which that consumer does not confirm either, stops before revoking anything."""
    bus = RolloutBus(REDIS)
    bus.heartbeat("silent", [secret], ttl=600, info={})  # alive, but never acknowledges
    body = policy(secret, f"{{strategy: acknowledge, timeout: 30s, on_timeout: {on_timeout}}}")
    runtime, engine, dispatcher, clock, enqueue = start_run(ledger_url, backend, tmp_path, body)
    ((run_id, state),) = enqueue
    drive(engine, run_id, state, clock, dispatcher)
    run = run_state(runtime, run_id)
    assert run.state == final
    if final == "needs_attention":
        assert "timed out" in (run.last_error or "") and backend.read(secret).value == "initial"
        assert "rollback stopped" in (run.last_error or "") and "NOT revoked" in run.last_error
    else:
        assert backend.read(secret).value != "initial"
    bus.leave("silent", [secret])
    bus.close()


def test_command_strategy_runs_and_retries(env, ledger_url, backend, secret, tmp_path) -> None:
    log = tmp_path / "restarts.log"
    flag = tmp_path / "fail-once"
    flag.write_text("x")
    script = (
        f'echo "$KEYTURN_SECRET $KEYTURN_VERSION" >> {log}; '
        f"if [ -f {flag} ]; then rm {flag}; echo boom >&2; exit 3; fi"
    )
    body = policy(secret, f"{{strategy: command, commands: [[sh, -c, '{script}']], timeout: 10s}}")
    runtime, engine, dispatcher, clock, enqueue = start_run(ledger_url, backend, tmp_path, body)
    ((run_id, state),) = enqueue
    drive(engine, run_id, state, clock, dispatcher)
    run = run_state(runtime, run_id)
    assert run.state == "succeeded"
    lines = log.read_text().splitlines()
    assert len(lines) == 2 and all(line == f"{secret} {run.to_version}" for line in lines)
    outcomes = [e.outcome for e in events(runtime, run_id) if e.step == "restart"]
    assert outcomes == ["retry", "ok"]


def test_command_that_keeps_failing_rolls_back(env, ledger_url, backend, secret, tmp_path) -> None:
    body = policy(secret, "{strategy: command, commands: [[sh, -c, 'exit 1']], timeout: 5s}")
    runtime, engine, dispatcher, clock, enqueue = start_run(ledger_url, backend, tmp_path, body)
    ((run_id, state),) = enqueue
    drive(engine, run_id, state, clock, dispatcher)
    run = run_state(runtime, run_id)
    assert run.state == "needs_attention"
    assert "exited with status 1" in (run.last_error or "")
    assert backend.read(secret).value == "initial"


class Receiver(BaseHTTPRequestHandler):
    answers: ClassVar[list[int]] = []
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        self.send_response(type(self).answers.pop(0) if type(self).answers else 200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[Receiver]]]:
    handler = type("R", (Receiver,), {"answers": [], "received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    server.shutdown()
    server.server_close()


def test_webhook_is_signed_and_retried(
    env, ledger_url, backend, secret, tmp_path, receiver
) -> None:
    url, handler = receiver
    handler.answers[:] = [500, 200]
    body = policy(
        secret, f'{{strategy: webhook, url: "{url}", hmac_secret: hooks/key, {LOOPBACK}}}'
    )
    runtime, engine, dispatcher, clock, enqueue = start_run(ledger_url, backend, tmp_path, body)
    ((run_id, state),) = enqueue
    drive(engine, run_id, state, clock, dispatcher)
    assert run_state(runtime, run_id).state == "succeeded"
    assert len(handler.received) == 2
    headers, payload = handler.received[-1]
    expected = hmac.new(b"hmac-key-for-tests", payload, hashlib.sha256).hexdigest()
    assert headers["X-Keyturn-Signature"] == f"sha256={expected}"
    sent = json.loads(payload)
    assert sent["secret"] == secret and sent["run_id"] == run_id
    assert backend.read(secret).value not in payload.decode()


def test_waves_respect_the_concurrency_budget(env, ledger_url, tmp_path) -> None:
    backend = MemoryProvider()
    stem = f"fleet_{uuid.uuid4().hex[:6]}"
    names = [f"{stem}/svc{i}" for i in range(3)]
    for name in names:
        backend.write(name, "initial")
    bus = RolloutBus(REDIS)
    bus.heartbeat("slow-pod", names, ttl=600, info={})  # holds the first wave open
    restart = (
        "{strategy: waves, concurrency: 1, waves: [{strategy: acknowledge, timeout: 10m}, "
        "{strategy: command, commands: [[sh, -c, 'exit 0']]}]}"
    )
    clock = Clock()
    schedules = write_policy(tmp_path / "schedules", policy(f"{stem}/*", restart)).parent
    runtime, engine, dispatcher = make(ledger_url, backend, clock, schedules)
    enqueue = dispatcher.tick().enqueue
    assert len(enqueue) == 3
    for run_id, state in enqueue:
        assert advance_until_waiting(engine, run_id, state) == "promoted"
    notes = {rid: events(runtime, rid)[-1].message or "" for rid, _ in enqueue}
    holding = [rid for rid, note in notes.items() if "to acknowledge" in note]
    queued = [rid for rid, note in notes.items() if "restart slot" in note]
    assert len(holding) == 1 and len(queued) == 2  # one policy never restarts the fleet at once
    bus.leave("slow-pod", names)
    bus.close()
    for run_id, _ in enqueue:
        drive(engine, run_id, run_state(runtime, run_id).state, clock, dispatcher)
    assert all(run_state(runtime, rid).state == "succeeded" for rid, _ in enqueue)


def test_failure_notification_reaches_the_webhook(
    monkeypatch, env, ledger_url, backend, secret, tmp_path, receiver
) -> None:
    url, handler = receiver
    monkeypatch.setenv("KEYTURN_NOTIFY_WEBHOOK", url)
    body = policy(secret, "{strategy: command, commands: [[sh, -c, 'exit 1']], timeout: 5s}")
    runtime, engine, dispatcher, clock, enqueue = start_run(ledger_url, backend, tmp_path, body)
    ((run_id, state),) = enqueue
    drive(engine, run_id, state, clock, dispatcher)
    assert run_state(runtime, run_id).state == "needs_attention"
    ((_headers, payload),) = handler.received
    text = json.loads(payload)["text"]
    assert secret in text and "needs attention" in text and f"run {run_id}" in text
    assert "initial" not in text


class RollbackReceiver(Receiver):
    """A deploy hook that cannot take the new version but takes the rollback."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        event = json.loads(body)["event"]
        self.send_response(503 if event == "secret.promoted" else 200)
        self.end_headers()


def test_a_webhook_that_keeps_failing_is_retried_for_its_budget_then_told_of_the_rollback(
    env, ledger_url, backend, secret, tmp_path
) -> None:
    handler = type("H", (RollbackReceiver,), {"answers": [], "received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        body = policy(
            secret,
            f'{{strategy: webhook, url: "{url}", hmac_secret: hooks/key, retry_for: 2m, '
            f"{LOOPBACK}}}",
        )
        runtime, engine, dispatcher, clock, enqueue = start_run(ledger_url, backend, tmp_path, body)
        ((run_id, state),) = enqueue
        drive(engine, run_id, state, clock, dispatcher)
    finally:
        server.shutdown()
        server.server_close()
    run = run_state(runtime, run_id)
    sent = [json.loads(payload) for _headers, payload in handler.received]
    promoted = [p for p in sent if p["event"] == "secret.promoted"]
    # time, not attempts: far more tries than max_attempts (3), all within retry_for
    assert len(promoted) > 3
    retries = [e for e in events(runtime, run_id) if e.step == "restart" and e.outcome == "retry"]
    assert retries[-1].at - retries[0].at <= timedelta(minutes=2)
    assert sent[-1]["event"] == "secret.rolled_back"
    assert sent[-1]["version"] == run.from_version and sent[-1]["rollback_of"] == run.to_version
    assert run.state == "needs_attention"  # the restart ran out of time: a human looks
    assert "HTTP 503" in (run.last_error or "") and "rolled back" in run.last_error
    assert backend.read(secret).value == "initial"


def test_the_rollback_runs_the_restart_commands_again(env, ledger_url, backend, secret, tmp_path):
    log = tmp_path / "events.log"
    script = f'echo "$KEYTURN_EVENT $KEYTURN_VERSION" >> {log}'
    body = policy(
        secret,
        f"{{strategy: waves, waves: [{{strategy: command, commands: [[sh, -c, '{script}']]}}, "
        "{strategy: acknowledge, timeout: 30s}]}",
    )
    bus = RolloutBus(REDIS)
    bus.heartbeat("silent", [secret], ttl=600, info={})  # the second wave times out
    try:
        runtime, engine, dispatcher, clock, enqueue = start_run(ledger_url, backend, tmp_path, body)
        ((run_id, state),) = enqueue
        drive(engine, run_id, state, clock, dispatcher)
    finally:
        bus.leave("silent", [secret])
        bus.close()
    run = run_state(runtime, run_id)
    lines = log.read_text().splitlines()
    assert lines[0] == f"promoted {run.to_version}"
    assert lines[1] == f"rolled_back {run.from_version}"  # the first wave of the rollback
    assert backend.read(secret).value == "initial"


@pytest.mark.parametrize("action", ["retry", "abandon"])
def test_a_rollback_that_stopped_is_resolved_by_hand(
    env, ledger_url, backend, secret, tmp_path, action
) -> None:
    """A silent consumer stops the rollback (needs_attention, nothing revoked). Once it is
    gone, ``retry`` resumes the rollback (announced again, with a fresh timeout) and
    ``abandon`` finishes it at once; either way the run ends ``failed`` on the old value."""
    bus = RolloutBus(REDIS)
    bus.heartbeat("silent", [secret], ttl=600, info={})
    body = policy(secret, "{strategy: acknowledge, timeout: 30s}")
    runtime, engine, dispatcher, clock, enqueue = start_run(ledger_url, backend, tmp_path, body)
    ((run_id, state),) = enqueue
    drive(engine, run_id, state, clock, dispatcher)
    assert run_state(runtime, run_id).state == "needs_attention"
    assert engine.stopped_state(run_state(runtime, run_id)).value == "rolling_back"
    bus.leave("silent", [secret])
    bus.close()
    if action == "retry":
        advanced, note = engine.retry_run(run_id, "olivia")
        assert advanced.state is not None and advanced.state.value == "rolling_back"
        assert "resuming the rollback" in note
        drive(engine, run_id, "rolling_back", clock, dispatcher)
    else:
        note = engine.abandon_run(run_id, "olivia", timedelta(hours=1))
        assert "previous version" in note
    run = run_state(runtime, run_id)
    assert run.state == "failed", run.last_error
    assert backend.read(secret).value == "initial"
