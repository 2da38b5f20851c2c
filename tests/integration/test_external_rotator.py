"""The ``external`` kind against its reference adapter (tests/adapters/reference_adapter.py, a
key issuer over HTTPS that keeps at most two valid keys): a full run through real Celery
workers, idempotency on the token, a refused test step rolled back, a slow or trickling adapter
cut off by the time budget, and signatures and certificates checked."""

from __future__ import annotations

import secrets
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from rotation.errors import RotationError, TargetRejected
from rotation.generator import GeneratorPolicy
from rotation.ledger.db import Ledger
from rotation.ledger.models import Run
from rotation.providers.memory import MemoryProvider
from rotation.rotators.base import RotationContext
from rotation.rotators.external.rotator import ExternalRotator
from rotation.run.engine import Engine
from rotation.run.runtime import Runtime
from rotation.scheduler.dispatcher import Dispatcher
from rotation.values import Stage
from tests.adapters.reference_adapter import Adapter
from tests.backends.cluster import Cluster, runs, store, wait_for

SECRET = "saas/api-key"

POLICY = """
policies:
  - name: saas
    secret: {secret}
    provider: {provider}
    kind: external
    schedule: {{every: 30d}}
    consumer_cache_ttl: 0s   # no consumer caches it here (the defaults rule)
    max_attempts: {attempts}
    target:
      url: {url}
      hmac_secret: saas/hmac
      ca_file: {ca}
      timeout: {timeout}
"""


def policy(adapter: Adapter, provider: str, attempts: int = 3, timeout: str = "5s") -> str:
    return POLICY.format(
        secret=SECRET,
        provider=provider,
        url=adapter.url,
        ca=adapter.ca_file,
        attempts=attempts,
        timeout=timeout,
    )


def test_a_full_run_through_celery_workers(cluster: Cluster, ledger: Ledger, external_adapter):
    adapter = external_adapter
    backend = store(cluster)
    initial = adapter.store.issue_initial()
    backend.write(SECRET, initial)
    backend.write("saas/hmac", adapter.store.hmac_key)
    schedules = Path(cluster.env["KEYTURN_SCHEDULES"])
    (schedules / "saas.yaml").write_text(policy(adapter, "local"))
    cluster.start("worker")
    cluster.start("beat")
    wait_for(
        lambda: runs(ledger) and runs(ledger)[0].state in ("succeeded", "failed"),
        60,
        cluster,
        "the external run to finish",
    )
    (run,) = runs(ledger)
    assert run.state == "succeeded", run.last_error
    current = backend.read(SECRET)
    assert current.token == run.token and current.value != initial
    assert adapter.store.accepts(current.value)
    assert not adapter.store.accepts(initial)  # retired at the adapter
    assert set(adapter.store.keys) == {current.value}
    assert adapter.store.calls == {"create": 1, "apply": 1, "test": 1, "retire": 1}
    assert current.value not in cluster.logs()  # never logged


def _context(adapter: Adapter, provider: MemoryProvider, token: str, **target: object):
    settings = {
        "url": adapter.url,
        "hmac_secret": "saas/hmac",
        "ca_file": str(adapter.ca_file),
        "timeout": timedelta(seconds=5),
        **target,
    }
    return RotationContext(
        secret=SECRET,
        provider=provider,
        token=token,
        generator=GeneratorPolicy(),
        target=settings,
        read_secret=lambda name: provider.read(name).value,
    )


@pytest.fixture
def backend(external_adapter: Adapter) -> MemoryProvider:
    provider = MemoryProvider()
    provider.write(SECRET, external_adapter.store.issue_initial())
    provider.write("saas/hmac", external_adapter.store.hmac_key)
    return provider


def test_create_is_idempotent_on_the_token_at_the_adapter(external_adapter, backend) -> None:
    rotator, token = ExternalRotator(), uuid.uuid4().hex
    ctx = _context(external_adapter, backend, token)
    current = backend.read(SECRET).value
    first = rotator.create(ctx, current)  # a crash before the engine staged it ...
    second = rotator.create(ctx, current)  # ... and the redelivered create
    assert first == second
    assert len(external_adapter.store.keys) == 2  # one key issued, not two
    assert external_adapter.store.calls["create"] == 2
    # a second run (another token) would be a third key: the issuer keeps two at most
    with pytest.raises(TargetRejected, match="two keys exist") as refused:
        rotator.create(_context(external_adapter, backend, uuid.uuid4().hex), current)
    assert not refused.value.retryable


class _Clock:
    def __init__(self) -> None:
        from datetime import UTC, datetime

        self.now = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)

    def __call__(self):
        return self.now


def _engine_run(ledger_url: str, tmp_path: Path, backend: MemoryProvider, body: str) -> Run:
    """Sync the policy, start its run, and follow it to the end like a worker would (the clock
    jumps over every retry wait)."""
    (tmp_path / "schedules").mkdir(exist_ok=True)
    (tmp_path / "schedules" / "p.yaml").write_text(body)
    clock = _Clock()
    runtime = Runtime(Ledger(ledger_url), clock=clock, providers={"memory": backend})
    engine = Engine(runtime, lease=timedelta(minutes=5))
    dispatcher = Dispatcher(runtime, tmp_path / "schedules")
    try:
        queue = list(dispatcher.tick().enqueue)
        for _ in range(50):
            while queue:
                outcome = engine.advance(*queue.pop(0))
                if outcome.enqueue and outcome.state is not None:
                    queue.append((outcome.run_id, outcome.state.value))
            with runtime.ledger.sessions() as session:
                run = session.scalars(select(Run)).one()
            if run.state in ("succeeded", "failed", "needs_attention"):
                return run
            clock.now = max(clock.now, run.next_attempt_at or clock.now) + timedelta(seconds=1)
            queue.extend(dispatcher.tick().enqueue)
        raise AssertionError("the run did not finish")
    finally:
        runtime.ledger.dispose()


def test_a_refused_test_step_is_rolled_back(
    ledger_url: str, tmp_path: Path, external_adapter: Adapter, backend: MemoryProvider
) -> None:
    initial = backend.read(SECRET).value
    external_adapter.store.refuse.add("test")
    run = _engine_run(ledger_url, tmp_path, backend, policy(external_adapter, "memory"))
    assert run.state == "failed", run.last_error
    assert "refused test" in (run.last_error or "") and "rolled back" in (run.last_error or "")
    assert backend.read(SECRET).value == initial
    assert not [v for v in backend.versions(SECRET) if Stage.PENDING in v.stages]
    assert set(external_adapter.store.keys) == {initial}  # undo deleted the new key
    assert external_adapter.store.calls["test"] == 1  # a refusal is not retried
    assert external_adapter.store.calls["undo"] == 1


@pytest.mark.parametrize("how", ["slow", "trickle"])
def test_a_slow_adapter_is_cut_off_by_the_time_budget(
    how: str,
    ledger_url: str,
    tmp_path: Path,
    external_adapter: Adapter,
    backend: MemoryProvider,
) -> None:
    initial = backend.read(SECRET).value
    if how == "slow":
        external_adapter.store.delay["test"] = 30.0
    else:  # every byte arrives well inside any socket timeout; the whole answer does not
        external_adapter.store.trickle.add("test")
    started = time.monotonic()
    run = _engine_run(
        ledger_url, tmp_path, backend, policy(external_adapter, "memory", attempts=2, timeout="1s")
    )
    elapsed = time.monotonic() - started
    assert run.state == "needs_attention", run.last_error  # attempts exhausted, rolled back
    assert "did not answer within 1 s" in (run.last_error or "")
    assert elapsed < 15, elapsed  # 2 tries of 1 s each, not 2 x 30 s (or 20 s of trickle)
    assert external_adapter.store.arrived["test"] == 2  # a timeout is retried
    assert backend.read(SECRET).value == initial
    assert set(external_adapter.store.keys) == {initial}


def test_a_wrong_hmac_key_is_refused_without_retry(external_adapter, backend) -> None:
    backend.write("saas/hmac", secrets.token_urlsafe(32))
    ctx = _context(external_adapter, backend, uuid.uuid4().hex)
    with pytest.raises(TargetRejected) as refused:
        ExternalRotator().create(ctx, backend.read(SECRET).value)
    assert "HTTP 401" in str(refused.value) and "bad signature" in str(refused.value)
    assert not refused.value.retryable
    assert external_adapter.store.calls["refused"] == 1 and len(external_adapter.store.keys) == 1


def test_an_untrusted_certificate_is_refused(external_adapter, backend, tmp_path) -> None:
    from tests.adapters.reference_adapter import make_certificates

    (tmp_path / "other").mkdir()
    other_ca, _, _ = make_certificates(tmp_path / "other")
    ctx = _context(external_adapter, backend, uuid.uuid4().hex, ca_file=str(other_ca))
    with pytest.raises(RotationError, match="certificate that does not verify") as refused:
        ExternalRotator().create(ctx, backend.read(SECRET).value)
    assert not refused.value.retryable
    assert not external_adapter.store.calls  # nothing reached the adapter


def test_an_error_quoting_a_value_is_blanked(external_adapter, backend) -> None:
    ctx = _context(external_adapter, backend, uuid.uuid4().hex)
    rotator = ExternalRotator()
    value = rotator.create(ctx, backend.read(SECRET).value)
    backend.stage_pending(SECRET, value, token=ctx.token)
    original = external_adapter.store._test

    def leaky(request):  # an adapter that quotes the key in its error
        return 422, {"error": f"key {request['value']} is not active"}

    external_adapter.store._test = leaky  # type: ignore[method-assign]
    try:
        with pytest.raises(TargetRejected) as refused:
            rotator.test(ctx)
    finally:
        external_adapter.store._test = original  # type: ignore[method-assign]
    assert str(value) not in str(refused.value)
    assert "[redacted]" in str(refused.value)


def test_a_slow_command_is_killed_with_its_children(backend: MemoryProvider, tmp_path) -> None:
    import sys

    marker = tmp_path / "grandchild-finished"
    script = tmp_path / "slow_adapter.py"
    script.write_text(
        "import subprocess, sys, time\n"
        "child = 'import pathlib, sys, time; time.sleep(3); pathlib.Path(sys.argv[1]).touch()'\n"
        f"subprocess.Popen([sys.executable, '-c', child, {str(marker)!r}])\n"
        "time.sleep(30)\n"
    )
    ctx = RotationContext(
        secret=SECRET,
        provider=backend,
        token=uuid.uuid4().hex,
        generator=GeneratorPolicy(),
        target={"command": [sys.executable, str(script)], "timeout": timedelta(seconds=1)},
        read_secret=lambda name: backend.read(name).value,
    )
    started = time.monotonic()
    with pytest.raises(RotationError, match="did not finish within 1 s") as cut:
        ExternalRotator().create(ctx, backend.read(SECRET).value)
    assert cut.value.retryable
    assert time.monotonic() - started < 10
    time.sleep(4)
    assert not marker.exists()  # the whole process group was killed
