"""Backend request quotas shared through Redis: the rate and the concurrency hold across worker
processes, throttling answers are waited out, and a backend's 429 becomes ``Throttled``."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid

import pytest
import redis

from rotation.config import Quota, backend_quota
from rotation.errors import ConfigurationError, Throttled
from rotation.providers.limits import LimitedProvider, RequestLimiter
from rotation.providers.memory import MemoryProvider
from tests.backends.faultproxy import FaultProxy
from tests.backends.vault import OpenBao, new_prefix

REDIS = "redis://127.0.0.1:6379/0"


def limited(quota: Quota, namespace: str, inner: object | None = None, **options: float):
    limiter = RequestLimiter(redis.Redis.from_url(REDIS), "test", quota, namespace=namespace)
    provider = inner if inner is not None else MemoryProvider()
    return LimitedProvider(provider, limiter, **options)  # type: ignore[arg-type]


def _reader(namespace: str, calls: int, done: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    provider = limited(Quota(read=20), namespace)
    provider.inner.write("k", "v")
    for _ in range(calls):
        provider.read("k")
    done.put(time.monotonic())


def test_the_rate_holds_across_processes() -> None:
    """Two processes, 40 reads each, one 20/s bucket (20 in the burst): at least 3 s in all."""
    namespace = f"t{uuid.uuid4().hex[:8]}"
    ctx = multiprocessing.get_context("spawn")
    done: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_reader, args=(namespace, 40, done)) for _ in range(2)]
    started = time.monotonic()
    for proc in procs:
        proc.start()
    ends = [done.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(10)
        assert proc.exitcode == 0
    # 80 requests at 20/s with 20 in the burst need 3 s; two separate buckets would need 1 s
    assert max(ends) - started >= 2.9


class _Slow(MemoryProvider):
    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.most = 0
        self._count = threading.Lock()

    def read(self, name, *, stage=None):  # type: ignore[no-untyped-def,override]
        with self._count:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        time.sleep(0.1)
        with self._count:
            self.in_flight -= 1
        return super().read(name)


def test_the_concurrency_limit_holds() -> None:
    inner = _Slow()
    inner.write("k", "v")
    provider = limited(Quota(concurrency=2), f"t{uuid.uuid4().hex[:8]}", inner)
    threads = [threading.Thread(target=provider.read, args=("k",)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert inner.most == 2


class _Throttling(MemoryProvider):
    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals
        self.calls = 0

    def promote(self, name: str, *, token: str) -> str:
        self.calls += 1
        if self.calls <= self.refusals:
            raise Throttled("429 from the backend", retry_after=0.05)
        return super().promote(name, token=token)


def test_throttling_answers_are_waited_out_within_the_bound() -> None:
    inner = _Throttling(refusals=3)
    inner.write("k", "v1")
    inner.stage_pending("k", "v2", token="t1")
    provider = limited(Quota(), f"t{uuid.uuid4().hex[:8]}", inner, max_wait=5)
    provider.promote("k", token="t1")
    assert inner.calls == 4 and inner.read("k").value == "v2"

    stubborn = _Throttling(refusals=10_000)
    stubborn.write("k", "v1")
    stubborn.stage_pending("k", "v2", token="t1")
    provider = limited(Quota(), f"t{uuid.uuid4().hex[:8]}", stubborn, max_wait=0.3)
    with pytest.raises(Throttled):
        provider.promote("k", token="t1")
    assert 2 <= stubborn.calls <= 10  # bounded: it gave up after max_wait


def test_without_redis_requests_go_through_and_redis_is_not_asked_at_every_call() -> None:
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    attempts = []
    original = unreachable.execute_command

    def counting(*args: object, **kwargs: object) -> object:
        attempts.append(args[0])
        return original(*args, **kwargs)

    unreachable.execute_command = counting  # type: ignore[method-assign]
    provider = LimitedProvider(MemoryProvider(), RequestLimiter(unreachable, "test", Quota(read=1)))
    provider.write("k", "v")
    assert [provider.read("k").value for _ in range(5)] == ["v"] * 5
    assert len(attempts) == 1  # one failed try, then a pause


def test_quotas_come_from_the_published_defaults_or_the_environment() -> None:
    assert backend_quota("aws", {}) == Quota(read=10_000, write=50, list=50, concurrency=32)
    assert backend_quota("vault", {}).unlimited  # no fixed quota
    tuned = backend_quota("aws", {"KEYTURN_RATE_AWS_WRITE": "20", "KEYTURN_CONCURRENCY_AWS": "4"})
    assert tuned.write == 20 and tuned.concurrency == 4
    with pytest.raises(ConfigurationError, match="KEYTURN_RATE_AZURE_READ"):
        backend_quota("azure", {"KEYTURN_RATE_AZURE_READ": "fast"})


def test_a_vault_answering_429_is_throttled_and_the_limiter_waits_it_out(
    openbao: OpenBao,
) -> None:
    from rotation.providers.vault import VaultProvider
    from rotation.providers.vault.auth import TokenAuth

    with FaultProxy(upstream=("127.0.0.1", openbao.server.port)) as proxy:
        prefix = new_prefix()

        def through_proxy() -> VaultProvider:
            return VaultProvider(proxy.address, TokenAuth(openbao.root_token), path_prefix=prefix)

        seed = through_proxy()
        seed.write("k", "v")
        # one request per 10 s: the client's own retries (Retry-After: 1) cannot outlast it
        proxy.configure(rate_limit=0.1)
        raw = through_proxy()
        raw.read("k")
        with pytest.raises(Throttled):  # the 429 is translated, not a generic error
            raw.read("k")

        proxy.configure(rate_limit=5)
        guarded = limited(Quota(read=4), f"t{uuid.uuid4().hex[:8]}", through_proxy(), max_wait=30)
        assert [guarded.read("k").value for _ in range(20)] == ["v"] * 20
        for provider in (seed, raw):
            provider.close()


def test_workers_draw_on_the_backend_quota_through_redis(ledger_url: str) -> None:
    """The runtime wraps a backend that has a quota (keyed by its alias, in this deployment's
    Redis namespace) and leaves an unlimited one as it is."""
    from rotation.ledger.db import Ledger
    from rotation.run.runtime import Runtime

    namespace = f"t{uuid.uuid4().hex[:8]}"
    environ = {
        "KEYTURN_REDIS_URL": REDIS,
        "KEYTURN_NAMESPACE": namespace,
        "KEYTURN_RATE_MEMORY_READ": "5",
        "KEYTURN_LEASE_SECONDS": "60",
    }
    runtime = Runtime(Ledger(ledger_url), environ=environ)
    try:
        provider = runtime.provider("memory")
        assert isinstance(provider, LimitedProvider)
        assert provider.limiter.prefix == f"keyturn:{namespace}:limits:memory"
        assert provider.max_wait == pytest.approx(60 * 0.8 / 10)
        provider.write("k", "v")
        started = time.monotonic()
        assert [provider.read("k").value for _ in range(15)] == ["v"] * 15
        assert time.monotonic() - started >= 1.8  # 5 in the burst, then 5 a second
        assert redis.Redis.from_url(REDIS).exists(f"keyturn:{namespace}:limits:memory:read")
        unlimited = Runtime(Ledger(ledger_url), environ={"KEYTURN_REDIS_URL": REDIS})
        assert not isinstance(unlimited.provider("memory"), LimitedProvider)
        unlimited.close()
    finally:
        runtime.close()
