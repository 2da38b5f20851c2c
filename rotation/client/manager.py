"""``SecretsManager``: the one interface applications use, over any provider, with a TTL cache."""

from __future__ import annotations

import builtins
import contextvars
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rotation.access.audit import Auditor, AuditSink, sink_from_env
from rotation.access.guard import authorize_audited
from rotation.access.roles import GUARD, Permission, ensure_configured
from rotation.client.cache import TTLCache
from rotation.client.events import RotateCallback
from rotation.config import Settings
from rotation.errors import KeyturnError, SecretNotFound
from rotation.generator import GeneratorPolicy, generate
from rotation.names import matches_pattern, validate_name, validate_prefix
from rotation.providers.base import Provider
from rotation.providers.registry import create_provider
from rotation.values import SecretValue, VersionInfo, freeze_value, with_new_secret

if TYPE_CHECKING:
    from rotation.client.consumer import ConsumerAgent

__all__ = [
    "RotationReport",
    "RotationResult",
    "SecretsManager",
    "get_secret",
    "get_secrets_manager",
    "reset_secrets_manager",
    "set_secret",
]

log = logging.getLogger("keyturn.secrets")

#: Upper bound on concurrent backend calls made by one ``get_many``.
BATCH_WORKERS = 8


@dataclass(frozen=True)
class RotationResult:
    """What happened to one secret in ``rotate_all``; never the value."""

    name: str
    ok: bool
    version_id: str | None = None
    error: str | None = None


@dataclass
class RotationReport:
    """Per-secret outcome of ``rotate_all``."""

    results: list[RotationResult] = field(default_factory=list)

    @property
    def rotated(self) -> list[str]:
        return [r.name for r in self.results if r.ok]

    @property
    def failed(self) -> dict[str, str]:
        return {r.name: r.error or "" for r in self.results if not r.ok}

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def __len__(self) -> int:
        return len(self.results)


class SecretsManager:
    """Get, set, list, delete, version and rotate secrets in one backend, with a TTL cache.

    The cache is invalidated by this manager's own writes, rotations and deletes; other
    writers are seen after at most ``cache_ttl`` seconds (or at once with ``use_cache=False``).
    """

    def __init__(
        self,
        provider: Provider,
        *,
        cache_ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        generator: GeneratorPolicy | None = None,
        audit: AuditSink | None = None,
    ) -> None:
        self.provider = provider
        # audit and roles (docs/audit-and-roles.md): checks run only while GUARD.on
        self.audit = audit
        self._auditor = Auditor(audit)
        self._guard = GUARD
        ensure_configured()
        self.generator = generator or GeneratorPolicy()
        self._cache = TTLCache(cache_ttl, clock)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        #: Names read through this manager: what a consumer heartbeat announces.
        self._in_use: set[str] = set()
        self._rotate_callbacks: dict[str, list[RotateCallback]] = {}
        self._agent: ConsumerAgent | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SecretsManager:
        """Built from ``SECRETS_PROVIDER``, ``SECRETS_CACHE_TTL`` and the provider's variables;
        audited per ``KEYTURN_AUDIT`` (the ledger when ``KEYTURN_DATABASE_URL`` is set)."""
        env = os.environ if environ is None else environ
        settings = Settings.from_env(env)
        ensure_configured(env)
        provider = create_provider(settings.provider, env)
        return cls(provider, cache_ttl=settings.cache_ttl, audit=sink_from_env(env))

    @property
    def cache_ttl(self) -> float:
        return self._cache.ttl

    @cache_ttl.setter
    def cache_ttl(self, seconds: float) -> None:
        self._cache.ttl = seconds
        self._cache.invalidate()

    # older code (and older troubleshooting advice) sets ``manager._cache_ttl``
    _cache_ttl = cache_ttl

    # --- reading --------------------------------------------------------------------------

    def get(self, name: str, use_cache: bool = True) -> SecretValue:
        """The current value of ``name``; ``use_cache=False`` reads the backend and re-caches."""
        if self._guard.on:
            authorize_audited(Permission.READ, "secret.get", name, sink=self.audit)
        if use_cache:
            hit = self._cache.get(name)
            if hit is not None:
                return hit  # type: ignore[no-any-return]
        return self._fetch(name)

    def _fetch(self, name: str) -> SecretValue:
        generation = self._cache.generation
        # audited on backend reads only: a cache hit returns what an audited read fetched
        with self._auditor.read("secret.get", name) as note:
            version = self.provider.read(name)
            note.version_id = version.version_id
        value = version.value
        self._in_use.add(name)
        self._cache.put(name, value, generation)
        return value

    def get_many(self, names: Iterable[str]) -> dict[str, SecretValue]:
        """Several values at once; misses are fetched concurrently (at most 8 at a time).

        Raises :class:`SecretNotFound` naming every missing secret."""
        wanted = list(dict.fromkeys(names))
        for name in wanted:
            validate_name(name)
        if self._guard.on:
            for name in wanted:
                authorize_audited(Permission.READ, "secret.get", name, sink=self.audit)
        found: dict[str, SecretValue] = {}
        misses = []
        for name in wanted:
            hit = self._cache.get(name)
            if hit is None:
                misses.append(name)
            else:
                found[name] = hit
        missing: list[str] = []
        outcomes = self._map(self._fetch_or_none, misses)
        for name, value in zip(misses, outcomes, strict=True):
            if value is None:
                missing.append(name)
            else:
                found[name] = value
        if missing:
            raise SecretNotFound(", ".join(missing))
        return {name: found[name] for name in wanted}

    def _fetch_or_none(self, name: str) -> SecretValue | None:
        try:
            return self._fetch(name)
        except SecretNotFound:
            return None

    def _map(
        self, fn: Callable[[str], SecretValue | None], names: list[str]
    ) -> list[SecretValue | None]:
        if len(names) <= 1:
            return [fn(name) for name in names]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(BATCH_WORKERS, thread_name_prefix="keyturn-get")
        # pool threads act as the caller (roles.acting_as is a context variable)
        contexts = [contextvars.copy_context() for _ in names]
        return list(self._pool.map(lambda ctx, name: ctx.run(fn, name), contexts, names))

    def list(self, prefix: str = "") -> list[str]:
        """Names of all secrets, or those starting with ``prefix``."""
        validate_prefix(prefix)
        if self._guard.on:
            authorize_audited(Permission.LIST, "secret.list", prefix or None, sink=self.audit)
        with self._auditor.read("secret.list", detail=f"prefix {prefix!r}" if prefix else None):
            return self.provider.list(prefix)

    def versions(self, name: str) -> builtins.list[VersionInfo]:
        """Version id, creation time and stages of each retained version; never values."""
        validate_name(name)
        if self._guard.on:
            authorize_audited(Permission.LIST, "secret.versions", name, sink=self.audit)
        with self._auditor.read("secret.versions", name):
            return self.provider.versions(name)

    # --- writing --------------------------------------------------------------------------

    def set(self, name: str, value: SecretValue) -> str:
        """Store ``value`` as the new current version; returns its version id."""
        validate_name(name)
        frozen = freeze_value(value)
        if self._guard.on:
            authorize_audited(Permission.WRITE, "secret.set", name, sink=self.audit)
        with self._auditor.write("secret.set", name) as note:
            try:
                version_id = self.provider.write(name, frozen)
            finally:
                self._cache.invalidate(name)
            note.version_id = version_id
        log.info("secret written", extra={"action": "secret.set", "secret": name})
        return version_id

    def set_many(self, values: Mapping[str, SecretValue]) -> dict[str, str]:
        """Store several values; every name and value is checked before anything is written."""
        checked = {validate_name(name): freeze_value(value) for name, value in values.items()}
        if self._guard.on:  # all or nothing: every name is allowed before any is written
            for name in checked:
                authorize_audited(Permission.WRITE, "secret.set", name, sink=self.audit)
        return {name: self.set(name, value) for name, value in checked.items()}

    def delete(self, name: str) -> None:
        """Delete ``name`` and all its versions."""
        validate_name(name)
        if self._guard.on:
            authorize_audited(Permission.DELETE, "secret.delete", name, sink=self.audit)
        with self._auditor.write("secret.delete", name):
            try:
                self.provider.delete(name)
            finally:
                self._cache.invalidate(name)
        log.info("secret deleted", extra={"action": "secret.delete", "secret": name})

    def invalidate(self, name: str | None = None) -> None:
        """Drop ``name`` (or every entry) from this manager's cache."""
        self._cache.invalidate(name)

    # --- rotating -------------------------------------------------------------------------

    def rotate(self, name: str, generator: GeneratorPolicy | None = None) -> SecretValue:
        """Store a freshly generated value as the new current version and return it.

        A string secret gets a new string; in a JSON secret the first of ``password``,
        ``api_key``, ``token`` changes (the rule the ``random`` kind follows too; no such field:
        :class:`UnsupportedOperation`). The new value is staged as pending, then promoted, so
        plain readers never see a half state.
        For credentials that must also change in a target system, use a rotation policy."""
        validate_name(name)
        if self._guard.on:
            authorize_audited(Permission.ROTATE, "secret.rotate", name, sink=self.audit)
        return self._rotate(name, generator)[0]

    def _rotate(
        self, name: str, generator: GeneratorPolicy | None = None
    ) -> tuple[SecretValue, str]:
        validate_name(name)
        with self._auditor.write("secret.rotate", name) as note:
            new_value, version_id = self._rotate_unaudited(name, generator)
            note.version_id = version_id
        log.info("secret rotated", extra={"action": "secret.rotate", "secret": name})
        return new_value, version_id

    def _rotate_unaudited(
        self, name: str, generator: GeneratorPolicy | None
    ) -> tuple[SecretValue, str]:
        current = self.provider.read(name).value
        new_value = with_new_secret(name, current, generate(generator or self.generator))
        token = uuid.uuid4().hex
        try:
            self.provider.stage_pending(name, new_value, token=token)
            version_id = self.provider.promote(name, token=token)
        finally:
            self._cache.invalidate(name)
        return new_value, version_id

    def rotate_all(self, pattern: str | None = None) -> RotationReport:
        """Rotate every secret whose name contains ``pattern`` (or matches it as a glob).

        One failure does not stop the rest; the report says what happened to each."""
        if self._guard.on:
            authorize_audited(Permission.ROTATE_ALL, "secret.rotate_all", None, sink=self.audit)
        report = RotationReport()
        detail = f"pattern {pattern!r}" if pattern else "all secrets"
        with self._auditor.write("secret.rotate_all", detail=detail) as note:
            for name in self.provider.list(""):
                if pattern and not matches_pattern(name, pattern):
                    continue
                try:
                    _, version_id = self._rotate(name)
                except KeyturnError as exc:
                    report.results.append(RotationResult(name, False, error=exc.message))
                else:
                    report.results.append(RotationResult(name, True, version_id=version_id))
            note.detail = f"{detail}: {len(report.rotated)} rotated, {len(report.failed)} failed"
        return report

    # --- consumers of rotations ----------------------------------------------------------

    def on_rotate(self, name: str, callback: RotateCallback) -> None:
        """Call ``callback(event)`` when ``name`` is promoted (after the cache entry is dropped);
        an exception makes this consumer report failure, and the rotation rolls back."""
        self._in_use.add(validate_name(name))
        self._rotate_callbacks.setdefault(name, []).append(callback)

    def rotate_callbacks(self, name: str) -> builtins.list[RotateCallback]:
        return list(self._rotate_callbacks.get(name, ()))

    def secrets_in_use(self) -> builtins.set[str]:
        """Names this manager has read or registered callbacks for."""
        return set(self._in_use)

    def subscribe(
        self,
        redis_url: str | None = None,
        *,
        consumer_id: str | None = None,
        heartbeat_ttl: float = 15.0,
    ) -> ConsumerAgent:
        """Follow rotations over Redis (``KEYTURN_REDIS_URL``): invalidate, call back, ack."""
        from rotation.client.consumer import ConsumerAgent
        from rotation.rollout import RolloutBus

        if self._agent is None:
            self._agent = ConsumerAgent(
                self, RolloutBus(redis_url), consumer_id=consumer_id, heartbeat_ttl=heartbeat_ttl
            ).start()
        return self._agent

    def close(self) -> None:
        if self._agent is not None:
            self._agent.stop()
            self._agent = None
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        self.provider.close()
        if self.audit is not None:
            self.audit.close()


_singleton: tuple[int, SecretsManager] | None = None
_singleton_lock = threading.Lock()


def get_secrets_manager() -> SecretsManager:
    """The process's manager, built from the environment on first use (rebuilt after fork)."""
    global _singleton
    current = _singleton
    if current is not None and current[0] == os.getpid():
        return current[1]
    with _singleton_lock:
        if _singleton is None or _singleton[0] != os.getpid():
            _singleton = (os.getpid(), SecretsManager.from_env())
        return _singleton[1]


def reset_secrets_manager() -> None:
    """Forget the process's manager (tests, or after changing the environment)."""
    global _singleton
    with _singleton_lock:
        if _singleton is not None and _singleton[0] == os.getpid():
            _singleton[1].close()
        _singleton = None


def get_secret(name: str, use_cache: bool = True) -> SecretValue:
    """``get_secrets_manager().get(name)``."""
    return get_secrets_manager().get(name, use_cache=use_cache)


def set_secret(name: str, value: SecretValue) -> str:
    """``get_secrets_manager().set(name, value)``."""
    return get_secrets_manager().set(name, value)
