"""Request quotas per backend, shared by every worker process through Redis.

A mass rotation (``keyturn rotate-all '*'`` after a breach) must queue inside the backend's
quota instead of tripping its throttling into failed runs. :class:`RequestLimiter` keeps, per
backend alias and request class (``read``, ``write``, ``list``), a token bucket (requests per
second) and a concurrency limit in Redis, so every worker process draws from the same budget.
:class:`LimitedProvider` wraps a provider: each call waits for a token and a slot, and a
throttling answer (:class:`~rotation.errors.Throttled`, HTTP 429) waits and tries again, up to
``max_wait`` seconds in all; past that it raises ``Throttled``, which the engine treats as a wait,
not a failed attempt.

Defaults come from the services' published quotas: AWS Secrets Manager allows 50 writes a
second per region (PutSecretValue, UpdateSecretVersionStage... combined) and 10,000
GetSecretValue; Azure Key Vault 4,000 secret transactions per 10 seconds per vault, all kinds
together (split 290 reads, 100 writes, 10 lists a second, as a rotation uses them). Vault/OpenBao
has no fixed quota (an operator configures one): unlimited unless set. The quotas
(:data:`~rotation.config.DEFAULT_QUOTAS`) and their overrides ``KEYTURN_RATE_<ALIAS>_<CLASS>``
(requests per second, 0 = unlimited) and ``KEYTURN_CONCURRENCY_<ALIAS>`` (requests in flight at
once, 0 = unlimited) are read by :func:`rotation.config.backend_quota`.

When Redis cannot be reached the limiter lets requests through (logged) and does not ask Redis
again for ``redis_pause`` seconds: the backend's own throttling answers, retried here, still
hold the rate.
"""

from __future__ import annotations

import builtins
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import redis

from rotation.config import Quota, RequestClass
from rotation.errors import Throttled
from rotation.providers.base import Capability, Provider
from rotation.values import SecretValue, SecretVersion, Stage, VersionInfo

__all__ = ["LimitedProvider", "RequestLimiter"]

log = logging.getLogger("keyturn.limits")

T = TypeVar("T")


# Token bucket: KEYS[1] = bucket; ARGV = rate, burst, ttl_ms. Returns the seconds to wait
# (0: a token was taken). Redis's own clock, so every worker shares one notion of time.
_TAKE_TOKEN = """
local rate, burst, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], ttl)
return tostring(wait)
"""

# Semaphore: KEYS[1] = holders (zset member -> expiry); ARGV = holder, limit, lease_s.
_TAKE_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 60)
  return 1
end
return 0
"""


class RequestLimiter:
    """Token buckets and concurrency slots of one backend alias, in Redis."""

    def __init__(
        self,
        client: redis.Redis,
        alias: str,
        quota: Quota,
        *,
        namespace: str = "db0",
        slot_lease: float = 60.0,
        redis_pause: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.alias = alias
        self.quota = quota
        self.prefix = f"keyturn:{namespace}:limits:{alias}"
        self.slot_lease = slot_lease
        self._sleep = sleep
        self._clock = clock
        self._take_token = client.register_script(_TAKE_TOKEN)
        self._take_slot = client.register_script(_TAKE_SLOT)
        self.redis_pause = redis_pause
        self._skip_redis_until = 0.0

    def close(self) -> None:
        self.client.close()

    def _redis_down(self, exc: Exception) -> None:
        self._skip_redis_until = self._clock() + self.redis_pause
        log.warning(
            "rate limiter for %s cannot reach Redis (%s): requests go through unlimited for %gs",
            self.alias,
            type(exc).__name__,
            self.redis_pause,
            extra={"action": "limits.redis_unavailable", "backend": self.alias},
        )

    def _redis_up(self) -> bool:
        return self._clock() >= self._skip_redis_until

    def _wait_for_token(self, request: RequestClass, deadline: float) -> None:
        rate = self.quota.rate(request)
        if rate <= 0 or not self._redis_up():
            return
        key = f"{self.prefix}:{request}"
        while True:
            try:
                wait = float(self._take_token(keys=[key], args=[rate, max(1.0, rate), 60_000]))
            except (redis.RedisError, OSError) as exc:
                self._redis_down(exc)
                return
            if wait <= 0:
                return
            if self._clock() + wait > deadline:
                raise Throttled(
                    f"{self.alias}: over the {request} quota of {rate:g} requests per second; "
                    "waiting longer than this step may",
                    retry_after=wait,
                )
            self._sleep(wait)

    @contextmanager
    def slot(self, request: RequestClass, deadline: float) -> Iterator[None]:
        """Hold a token and a concurrency slot for one request (waits up to ``deadline``)."""
        self._wait_for_token(request, deadline)
        holder = uuid.uuid4().hex
        key = f"{self.prefix}:inflight"
        held = False
        while not held and self.quota.concurrency > 0 and self._redis_up():
            try:
                held = bool(
                    self._take_slot(
                        keys=[key], args=[holder, self.quota.concurrency, self.slot_lease]
                    )
                )
            except (redis.RedisError, OSError) as exc:
                self._redis_down(exc)
                break
            if held:
                break
            if self._clock() + 0.05 > deadline:
                raise Throttled(
                    f"{self.alias}: {self.quota.concurrency} requests already in flight",
                    retry_after=1.0,
                )
            self._sleep(0.05)
        try:
            yield
        finally:
            if held:
                try:
                    self.client.zrem(key, holder)
                except (redis.RedisError, OSError):
                    pass  # the slot's lease expires on its own


class LimitedProvider:
    """A provider whose calls stay inside the backend's quota (see the module docstring)."""

    def __init__(
        self,
        inner: Provider,
        limiter: RequestLimiter,
        *,
        max_wait: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.name: str = inner.name
        self.capabilities: frozenset[Capability] = inner.capabilities
        self.limiter = limiter
        self.max_wait = max_wait
        self._sleep = sleep
        self._clock = clock

    def __getattr__(self, attribute: str) -> object:
        # a backend's own extras (check_access, restore, purge) pass through, outside the quota
        return getattr(self.inner, attribute)

    def _call(self, request: RequestClass, call: Callable[[], T]) -> T:
        deadline = self._clock() + self.max_wait
        backoff = 0.5
        while True:
            with self.limiter.slot(request, deadline):
                try:
                    return call()
                except Throttled as exc:
                    wait = exc.retry_after or random.uniform(backoff / 2, backoff)
                    throttled = exc
            if self._clock() + wait > deadline:
                raise throttled
            log.info(
                "%s throttled a %s; waiting %.1fs",
                self.name,
                request,
                wait,
                extra={"action": "limits.throttled", "backend": self.name},
            )
            self._sleep(wait)
            backoff = min(backoff * 2, 8.0)

    def read(self, name: str, *, stage: Stage = Stage.CURRENT) -> SecretVersion:
        return self._call("read", lambda: self.inner.read(name, stage=stage))

    def write(self, name: str, value: SecretValue, *, expected_version: str | None = None) -> str:
        return self._call(
            "write", lambda: self.inner.write(name, value, expected_version=expected_version)
        )

    def stage_pending(self, name: str, value: SecretValue, *, token: str) -> str:
        return self._call("write", lambda: self.inner.stage_pending(name, value, token=token))

    def promote(self, name: str, *, token: str) -> str:
        return self._call("write", lambda: self.inner.promote(name, token=token))

    def discard_pending(self, name: str, *, token: str) -> None:
        self._call("write", lambda: self.inner.discard_pending(name, token=token))

    def rollback(self, name: str, *, token: str) -> str:
        return self._call("write", lambda: self.inner.rollback(name, token=token))

    def list(self, prefix: str = "") -> builtins.list[str]:
        return self._call("list", lambda: self.inner.list(prefix))

    def delete(self, name: str, *, force: bool = False) -> None:
        self._call("write", lambda: self.inner.delete(name, force=force))

    def versions(self, name: str) -> builtins.list[VersionInfo]:
        return self._call("read", lambda: self.inner.versions(name))

    def close(self) -> None:
        self.inner.close()
        self.limiter.close()
