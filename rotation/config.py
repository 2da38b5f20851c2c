"""Settings from the environment: one parser, one behaviour for a bad value.

Every ``KEYTURN_*`` / ``SECRETS_*`` number and duration goes through :func:`env_number`: a value
that is not a number, or is out of range, raises :class:`~rotation.errors.ConfigurationError`
naming the variable. :class:`Settings` is what an application's ``SecretsManager`` needs;
:class:`EngineSettings` is what workers, beat, the CLI and the metrics exporter need;
:class:`DashboardSettings` is how ``keyturn dashboard`` authenticates its visitors.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, overload
from urllib.parse import parse_qs, urlsplit

from rotation.errors import ConfigurationError

__all__ = [
    "DEFAULT_BROKER_URL",
    "DEFAULT_CACHE_TTL",
    "DEFAULT_DAILY_BUDGET",
    "DEFAULT_QUOTAS",
    "REQUEST_CLASSES",
    "AnchorSettings",
    "DashboardSettings",
    "EngineSettings",
    "FlowerSettings",
    "Quota",
    "RequestClass",
    "RequestSettings",
    "Settings",
    "StepLimits",
    "backend_quota",
    "env_flag",
    "env_number",
    "env_seconds",
    "redis_namespace",
    "redis_url",
    "step_limits",
]

DEFAULT_CACHE_TTL = 300.0
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DAILY_BUDGET = 50


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def env_number(
    name: str,
    default: float,
    *,
    environ: Mapping[str, str] | None = None,
    minimum: float = 0.0,
    integer: bool = False,
    unit: str = "seconds",
) -> float:
    """``name`` as a number (``default`` when unset or blank), at least ``minimum``."""
    raw = (_env(environ).get(name) or "").strip()
    if not raw:
        return default
    kind = "a whole number" if integer else "a number"
    try:
        value = float(int(raw)) if integer else float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be {kind} of {unit}, not {raw!r}.") from None
    if not math.isfinite(value) or value < minimum:
        raise ConfigurationError(f"{name} must be {kind} of at least {minimum:g}, not {raw!r}.")
    return value


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@overload
def env_flag(name: str, default: bool, *, environ: Mapping[str, str] | None = None) -> bool: ...
@overload
def env_flag(
    name: str, default: None, *, environ: Mapping[str, str] | None = None
) -> bool | None: ...
def env_flag(
    name: str, default: bool | None, *, environ: Mapping[str, str] | None = None
) -> bool | None:
    """``name`` as a yes/no (``1/0``, ``true/false``, ``yes/no``, ``on/off``; ``default`` when
    unset or blank: None leaves the choice to the caller's library)."""
    raw = (_env(environ).get(name) or "").strip()
    if not raw:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be 1 or 0 (true or false, yes/no, on/off), not {raw!r}.")


def env_seconds(
    name: str, default: float, *, environ: Mapping[str, str] | None = None, minimum: float = 0.0
) -> timedelta:
    """``name`` as a number of seconds."""
    return timedelta(seconds=env_number(name, default, environ=environ, minimum=minimum))


@dataclass(frozen=True)
class StepLimits:
    """How long one step may take, all derived from the lease (see docs/rotation-run.md).

    ``budget`` (80% of the lease): the step's own cut-off; every external action starts only
    with time left in it, and its timeout is capped by what is left. ``soft`` (90%): Celery
    raises ``SoftTimeLimitExceeded`` in a step stuck in code that ignores the budget. ``hard``
    (95%): Celery kills the process, so it is gone before its lease expires and another worker
    may take the run over."""

    lease: timedelta
    budget: timedelta
    soft: timedelta
    hard: timedelta


def step_limits(lease: timedelta) -> StepLimits:
    """The limits of a step run under ``lease``."""
    return StepLimits(lease, lease * 0.8, lease * 0.9, lease * 0.95)


@dataclass(frozen=True)
class Settings:
    """``SECRETS_PROVIDER`` (default ``local``) and ``SECRETS_CACHE_TTL`` (seconds, 0 disables)."""

    provider: str = "local"
    cache_ttl: float = DEFAULT_CACHE_TTL

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = _env(environ)
        provider = (env.get("SECRETS_PROVIDER") or "local").strip().lower()
        return cls(
            provider=provider,
            cache_ttl=env_number("SECRETS_CACHE_TTL", DEFAULT_CACHE_TTL, environ=env),
        )


@dataclass(frozen=True)
class EngineSettings:
    """What the scheduler's processes share (see the README's table)."""

    #: Celery's broker (``KEYTURN_BROKER_URL``).
    broker_url: str = DEFAULT_BROKER_URL
    #: The queue tasks are sent to and workers consume (``KEYTURN_QUEUE``).
    queue: str = "keyturn"
    #: How often beat sends ``keyturn.dispatch_due`` (``KEYTURN_TICK_SECONDS``, at least 0.5).
    tick: timedelta = timedelta(seconds=5)
    #: A step's lease (``KEYTURN_LEASE_SECONDS``): a dead worker's run resumes after it.
    lease: timedelta = timedelta(seconds=300)
    #: Re-enqueue a run whose message went missing after this (``KEYTURN_REDELIVER_SECONDS``).
    redeliver: timedelta = timedelta(seconds=60)
    #: Where workers put the answers of manual requests and the CLI reads them
    #: (``KEYTURN_RESULT_BACKEND``; default: the broker when it is Redis, else none).
    result_backend: str | None = None
    #: Rotations a day before ``keyturn plan`` flags the day (``KEYTURN_DAILY_BUDGET``).
    daily_budget: int = DEFAULT_DAILY_BUDGET
    #: How long a policy or scheduled secret must stay absent before it is removed
    #: (``KEYTURN_REMOVAL_GRACE_SECONDS``): a file renamed for a tick removes nothing.
    removal_grace: timedelta = timedelta(seconds=900)
    #: How long a step may keep being throttled by its backend before the run needs attention
    #: (``KEYTURN_THROTTLED_MAX_SECONDS``); throttled tries wait and spend no attempt.
    throttled_max: timedelta = timedelta(hours=1)
    #: Whether workers send task events (``KEYTURN_TASK_EVENTS``): Flower's task list needs
    #: them; without them a worker spends ~40% less CPU per rotation (docs/operations.md).
    task_events: bool = True

    @property
    def limits(self) -> StepLimits:
        """A step's budget and Celery's time limits, from the lease."""
        return step_limits(self.lease)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EngineSettings:
        env = _env(environ)
        broker_url = (env.get("KEYTURN_BROKER_URL") or "").strip() or DEFAULT_BROKER_URL
        result_backend = (env.get("KEYTURN_RESULT_BACKEND") or "").strip() or (
            broker_url if broker_url.startswith(("redis://", "rediss://")) else None
        )
        return cls(
            broker_url=broker_url,
            result_backend=result_backend,
            queue=(env.get("KEYTURN_QUEUE") or "").strip() or "keyturn",
            tick=env_seconds("KEYTURN_TICK_SECONDS", 5.0, environ=env, minimum=0.5),
            lease=env_seconds("KEYTURN_LEASE_SECONDS", 300.0, environ=env, minimum=1.0),
            redeliver=env_seconds("KEYTURN_REDELIVER_SECONDS", 60.0, environ=env, minimum=1.0),
            daily_budget=int(
                env_number(
                    "KEYTURN_DAILY_BUDGET",
                    DEFAULT_DAILY_BUDGET,
                    environ=env,
                    minimum=1,
                    integer=True,
                    unit="rotations",
                )
            ),
            removal_grace=env_seconds("KEYTURN_REMOVAL_GRACE_SECONDS", 900.0, environ=env),
            throttled_max=env_seconds(
                "KEYTURN_THROTTLED_MAX_SECONDS", 3600.0, environ=env, minimum=1.0
            ),
            task_events=env_flag("KEYTURN_TASK_EVENTS", True, environ=env),
        )


@dataclass(frozen=True)
class AnchorSettings:
    """Where the audit chain's signed head anchors go (docs/audit-and-roles.md, "Anchors")."""

    #: The file anchors are appended to, one JSON line each (``KEYTURN_AUDIT_ANCHOR_FILE``);
    #: unset, nothing is anchored and ``keyturn audit verify`` says it cannot see truncation.
    file: str | None = None
    #: The Ed25519 private key (PEM file) workers sign anchors with (``KEYTURN_AUDIT_ANCHOR_KEY``).
    key_file: str | None = None
    #: The matching public key (PEM file) ``verify`` checks them with
    #: (``KEYTURN_AUDIT_ANCHOR_PUBLIC_KEY``; derived from the private key when only that is set).
    public_key_file: str | None = None
    #: A dispatcher tick anchors at most this often (``KEYTURN_AUDIT_ANCHOR_SECONDS``, at least 1).
    every: timedelta = timedelta(seconds=300)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AnchorSettings:
        env = _env(environ)
        return cls(
            file=(env.get("KEYTURN_AUDIT_ANCHOR_FILE") or "").strip() or None,
            key_file=(env.get("KEYTURN_AUDIT_ANCHOR_KEY") or "").strip() or None,
            public_key_file=(env.get("KEYTURN_AUDIT_ANCHOR_PUBLIC_KEY") or "").strip() or None,
            every=env_seconds("KEYTURN_AUDIT_ANCHOR_SECONDS", 300.0, environ=env, minimum=1.0),
        )


RequestClass = Literal["read", "write", "list"]
REQUEST_CLASSES: tuple[RequestClass, ...] = ("read", "write", "list")


@dataclass(frozen=True)
class Quota:
    """A backend's request quota: requests per second for each request class, and requests in
    flight at once (0 = unlimited, for each)."""

    read: float = 0.0
    write: float = 0.0
    list: float = 0.0
    concurrency: int = 0

    def rate(self, request: RequestClass) -> float:
        rate: float = getattr(self, request)
        return rate

    @property
    def unlimited(self) -> bool:
        return self.concurrency == 0 and all(self.rate(r) <= 0 for r in REQUEST_CLASSES)


#: Published quotas (rotation/providers/limits.py says where from); other aliases: unlimited.
DEFAULT_QUOTAS: dict[str, Quota] = {
    "aws": Quota(read=10_000, write=50, list=50, concurrency=32),
    # one budget of 400/s for every secret transaction: split as a rotation uses it (6 reads, 2
    # writes), so the classes together stay inside it
    "azure": Quota(read=290, write=100, list=10, concurrency=32),
}


def backend_quota(alias: str, environ: Mapping[str, str] | None = None) -> Quota:
    """``alias``'s quota: the published default, with ``KEYTURN_RATE_<ALIAS>_<CLASS>``
    (requests per second, 0 = unlimited) and ``KEYTURN_CONCURRENCY_<ALIAS>`` (0 = unlimited)."""
    env = _env(environ)
    base = DEFAULT_QUOTAS.get(alias, Quota())
    prefix = alias.upper().replace("-", "_")
    rates = {
        request: env_number(
            f"KEYTURN_RATE_{prefix}_{request.upper()}",
            base.rate(request),
            environ=env,
            unit="requests per second",
        )
        for request in REQUEST_CLASSES
    }
    concurrency = env_number(
        f"KEYTURN_CONCURRENCY_{prefix}",
        base.concurrency,
        environ=env,
        integer=True,
        unit="requests",
    )
    return Quota(**rates, concurrency=int(concurrency))


def redis_url(environ: Mapping[str, str] | None = None) -> str:
    """``KEYTURN_REDIS_URL``, else a Redis ``KEYTURN_BROKER_URL``, else the local default."""
    env = _env(environ)
    url = env.get("KEYTURN_REDIS_URL") or ""
    broker = env.get("KEYTURN_BROKER_URL") or ""
    if not url and broker.startswith(("redis://", "rediss://")):
        url = broker
    return url or "redis://127.0.0.1:6379/0"


_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def redis_namespace(url: str, environ: Mapping[str, str] | None = None) -> str:
    """``KEYTURN_NAMESPACE``, else ``db<N>`` of the Redis URL (``/N`` or ``?db=N``): what every
    Redis key and channel of this deployment carries."""
    explicit = (_env(environ).get("KEYTURN_NAMESPACE") or "").strip()
    if explicit:
        if not _NAMESPACE.fullmatch(explicit):
            raise ConfigurationError(
                "KEYTURN_NAMESPACE must be 1-63 letters, digits, '_', '.' or '-' (starting with "
                f"a letter or digit), not {explicit[:70]!r}."
            )
        return explicit
    parsed = urlsplit(url)
    number = parse_qs(parsed.query).get("db", [parsed.path.strip("/") or "0"])[0]
    return f"db{int(number)}" if number.isdigit() else "db0"


def _words(raw: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (raw or "").split(",") if part.strip())


@dataclass(frozen=True)
class DashboardSettings:
    """How ``keyturn dashboard`` authenticates (docs/operations.md, "The rotation dashboard")."""

    #: ``user:password[,user2:password2]`` (``KEYTURN_DASHBOARD_BASIC_AUTH``, like Flower's).
    basic_auth: str | None = None
    #: A file of ``user:password`` lines, readable by its owner only
    #: (``KEYTURN_DASHBOARD_AUTH_FILE``).
    auth_file: str | None = None
    #: A header a reverse proxy sets to the authenticated user (``KEYTURN_DASHBOARD_PROXY_HEADER``).
    proxy_header: str | None = None
    #: Client addresses whose proxy header is believed (``KEYTURN_DASHBOARD_TRUSTED_PROXIES``).
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DashboardSettings:
        env = _env(environ)
        header = (env.get("KEYTURN_DASHBOARD_PROXY_HEADER") or "").strip() or None
        if header is not None and not all(c.isalnum() or c == "-" for c in header):
            raise ConfigurationError(
                f"KEYTURN_DASHBOARD_PROXY_HEADER must be a header name, not {header!r}."
            )
        return cls(
            basic_auth=(env.get("KEYTURN_DASHBOARD_BASIC_AUTH") or "").strip() or None,
            auth_file=(env.get("KEYTURN_DASHBOARD_AUTH_FILE") or "").strip() or None,
            proxy_header=header,
            trusted_proxies=_words(env.get("KEYTURN_DASHBOARD_TRUSTED_PROXIES"))
            or cls.trusted_proxies,
        )


@dataclass(frozen=True)
class FlowerSettings:
    """Whether this environment gives Flower authentication (``keyturn doctor`` checks it)."""

    #: ``FLOWER_BASIC_AUTH`` is set (its value is never kept).
    basic_auth: bool = False
    #: ``FLOWER_AUTH`` (an OAuth e-mail pattern) is set.
    oauth: bool = False
    #: ``FLOWER_UNAUTHENTICATED_API`` is set: anyone reaching Flower may start tasks.
    unauthenticated_api: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FlowerSettings:
        env = _env(environ)
        return cls(
            basic_auth=bool((env.get("FLOWER_BASIC_AUTH") or "").strip()),
            oauth=bool((env.get("FLOWER_AUTH") or "").strip()),
            unauthenticated_api=(env.get("FLOWER_UNAUTHENTICATED_API") or "").strip().lower()
            not in ("", "0", "false", "no"),
        )


@dataclass(frozen=True)
class RequestSettings:
    """Who may send manual requests to the workers, and how (docs/audit-and-roles.md,
    "Trust boundaries")."""

    #: The workers' keyring: a directory of ``<principal>.pub`` PEM files
    #: (``KEYTURN_OPERATOR_KEYS``); None: only unsigned requests, acting as ``api_principal``.
    operator_keys: str | None = None
    #: The operator's private key, a PEM file only its owner reads (``KEYTURN_OPERATOR_KEY``).
    operator_key: str | None = None
    #: Who an unsigned request (a bare Flower or ``celery call``) acts as
    #: (``KEYTURN_API_PRINCIPAL``).
    api_principal: str = "api"
    #: How long a signed request stays valid, by the ledger's clock
    #: (``KEYTURN_REQUEST_TTL_SECONDS``).
    ttl: timedelta = timedelta(seconds=300)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RequestSettings:
        env = _env(environ)
        principal = (env.get("KEYTURN_API_PRINCIPAL") or "").strip() or "api"
        if len(principal) > 200 or any(ord(c) < 32 for c in principal):
            raise ConfigurationError(
                "KEYTURN_API_PRINCIPAL must be a principal name (at most 200 printable "
                f"characters), not {principal[:40]!r}."
            )
        return cls(
            operator_keys=(env.get("KEYTURN_OPERATOR_KEYS") or "").strip() or None,
            operator_key=(env.get("KEYTURN_OPERATOR_KEY") or "").strip() or None,
            api_principal=principal,
            ttl=env_seconds("KEYTURN_REQUEST_TTL_SECONDS", 300.0, environ=env, minimum=5.0),
        )
