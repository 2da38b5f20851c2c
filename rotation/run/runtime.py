"""Per-process resources the engine uses: the ledger, providers, rotators and policies."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import redis

from rotation.config import EngineSettings, Settings, backend_quota, redis_namespace, redis_url
from rotation.errors import ConfigurationError
from rotation.ledger.db import Ledger
from rotation.ledger.models import PolicyRow
from rotation.policy import Policy
from rotation.providers.base import Provider
from rotation.providers.limits import LimitedProvider, RequestLimiter
from rotation.providers.registry import create_provider
from rotation.rotators.base import Rotator
from rotation.rotators.registry import get_rotator

if TYPE_CHECKING:
    from rotation.rollout import RolloutBus

__all__ = ["Clock", "Runtime", "utcnow"]

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """This host's clock: for log lines and measuring, never for a decision (use the runtime's
    ``clock``, the database's time)."""
    return datetime.now(UTC)


class Runtime:
    """What one worker process shares across tasks; build one per process (after fork)."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        environ: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        worker_id: str | None = None,
        providers: Mapping[str, Provider] | None = None,
    ) -> None:
        self.ledger = ledger
        self.environ = dict(os.environ if environ is None else environ)
        #: The one clock of every decision (leases, due claims, waits, stall detection): the
        #: database's (``Ledger.now``), so a worker whose own clock is off cannot steal a lease
        #: or start a rotation early. Tests and simulations give a clock of their own.
        self.clock: Clock = clock or ledger.now
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.default_provider = Settings.from_env(self.environ).provider
        self._providers: dict[str, Provider] = dict(providers or {})
        self._policies: dict[str, tuple[str, Policy]] = {}
        self._lock = threading.Lock()
        self._bus: RolloutBus | None = None

    def provider(self, alias: str | None) -> Provider:
        """The provider for ``alias`` (None = SECRETS_PROVIDER), built once; kept inside the
        backend's request quota (``rotation.config.backend_quota``) when it has one."""
        key = alias or self.default_provider
        with self._lock:
            if key not in self._providers:
                self._providers[key] = self._limited(key, create_provider(key, self.environ))
            return self._providers[key]

    def _limited(self, alias: str, provider: Provider) -> Provider:
        """``provider`` drawing on ``alias``'s quota, shared through Redis by every process.

        A call waits for its quota at most a tenth of a step's budget; past that the step
        raises ``Throttled``, which the engine turns into a wait that spends no attempt."""
        quota = backend_quota(alias, self.environ)
        if quota.unlimited:
            return provider
        url = redis_url(self.environ)
        limiter = RequestLimiter(
            redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2),
            alias,
            quota,
            namespace=redis_namespace(url, self.environ),
        )
        budget = EngineSettings.from_env(self.environ).limits.budget.total_seconds()
        return LimitedProvider(provider, limiter, max_wait=min(30.0, budget / 10))

    def rollout_bus(self) -> RolloutBus:
        """The Redis rollout bus (``KEYTURN_REDIS_URL``), connected on first use."""
        from rotation.rollout import RolloutBus, redis_url

        with self._lock:
            if self._bus is None:
                self._bus = RolloutBus(redis_url(self.environ), environ=self.environ)
            return self._bus

    def rotator(self, kind: str) -> Rotator:
        return get_rotator(kind)

    def cached_policy(self, name: str, spec_hash: str) -> Policy | None:
        """The policy already parsed for ``name`` at ``spec_hash``, if any (no ledger read)."""
        cached = self._policies.get(name)
        return cached[1] if cached is not None and cached[0] == spec_hash else None

    def policy(self, row: PolicyRow) -> Policy:
        """The validated policy of a ledger row, parsed once per spec."""
        cached = self._policies.get(row.name)
        if cached is not None and cached[0] == row.spec_hash:
            return cached[1]
        try:
            policy = Policy.model_validate(row.spec)
        except ValueError as exc:
            raise ConfigurationError(
                f"Policy {row.name!r} stored in the ledger no longer validates; fix "
                f"{row.source} and let the dispatcher sync it ({exc.__class__.__name__})."
            ) from None
        self._policies[row.name] = (row.spec_hash, policy)
        return policy

    def close(self) -> None:
        for provider in self._providers.values():
            provider.close()
        self._providers.clear()
        if self._bus is not None:
            self._bus.close()
            self._bus = None
        self.ledger.dispose()
