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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from rotation.errors import ConfigurationError

__all__ = [
    "DEFAULT_BROKER_URL",
    "DEFAULT_CACHE_TTL",
    "DEFAULT_DAILY_BUDGET",
    "AnchorSettings",
    "DashboardSettings",
    "EngineSettings",
    "FlowerSettings",
    "Settings",
    "StepLimits",
    "env_number",
    "env_seconds",
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
    #: Rotations a day before ``keyturn plan`` flags the day (``KEYTURN_DAILY_BUDGET``).
    daily_budget: int = DEFAULT_DAILY_BUDGET
    #: How long a policy or scheduled secret must stay absent before it is removed
    #: (``KEYTURN_REMOVAL_GRACE_SECONDS``): a file renamed for a tick removes nothing.
    removal_grace: timedelta = timedelta(seconds=900)

    @property
    def limits(self) -> StepLimits:
        """A step's budget and Celery's time limits, from the lease."""
        return step_limits(self.lease)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EngineSettings:
        env = _env(environ)
        return cls(
            broker_url=(env.get("KEYTURN_BROKER_URL") or "").strip() or DEFAULT_BROKER_URL,
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
