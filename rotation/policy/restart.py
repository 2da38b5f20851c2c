"""Restart strategies (``restart: {strategy: ...}``): each registered once, with its schema and
the runner the restart step calls (``rotation/run/restart/``).

``register_restart_strategy(name, Schema, "package.module:runner")`` is all a new strategy
needs: policies validate with ``Schema`` (inside ``waves`` too) and the restart step imports the
runner on first use. A runner is ``runner(step, spec, wave_started) -> WaveOutcome``.

A strategy's worst case (``command``: every command running to its timeout) must fit the step
budget, 80% of the lease (``KEYTURN_LEASE_SECONDS``, read when the policy is validated): the
loader refuses it otherwise, naming the field. Each wave of ``waves`` is a step of its own.

Two answers each strategy gives the rest of the code: ``confirms`` (when it is done, consumers
have moved: the defaults rule of ``rotation/policy/grace.py`` relies on it) and ``retry_budget``
(how long a retryable failure of the strategy is retried, counted from when it started: time,
not attempts, so a short outage of Redis or of a deploy hook only delays the run).
"""

from __future__ import annotations

import ipaddress
import pwd
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    SerializeAsAny,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rotation.config import EngineSettings
from rotation.durations import Duration, format_duration
from rotation.errors import ConfigurationError
from rotation.policy.destinations import IPAddress, IPNetwork, parse_networks, refusal
from rotation.registry import AliasRegistry, import_object
from rotation.schema import Spec, check_secret_name, short_repr

__all__ = [
    "RESTART_STRATEGIES",
    "AcknowledgeRestart",
    "CommandRestart",
    "NoRestart",
    "RestartStrategy",
    "WavesRestart",
    "WebhookRestart",
    "parse_strategy",
    "register_restart_strategy",
    "strategy_runner",
]


def step_budget() -> timedelta:
    """The time one step may take under this process's lease (``KEYTURN_LEASE_SECONDS``)."""
    return EngineSettings.from_env().limits.budget


def check_budget(worst_case: timedelta, what: str) -> None:
    """Raise a ValueError (located by pydantic at the field being validated) when
    ``worst_case`` does not fit the step budget."""
    budget = step_budget()
    if worst_case > budget:
        lease = EngineSettings.from_env().lease
        raise ValueError(
            f"{what} can take {_human(worst_case)}, more than a step may take "
            f"({_human(budget)}: 80% of the {_human(lease)} lease, KEYTURN_LEASE_SECONDS); "
            "lower the timeout, split the commands into waves, or raise the lease"
        )


def _human(value: timedelta) -> str:
    seconds = value.total_seconds()
    return format_duration(value) if seconds.is_integer() else f"{seconds:g}s"


@dataclass(frozen=True)
class RestartEntry:
    """One registered strategy: the schema of its policy block and its runner's import path."""

    schema: type[RestartStrategy]
    runner: str


#: strategy name -> :class:`RestartEntry`.
RESTART_STRATEGIES = AliasRegistry("restart strategy", {})


class RestartStrategy(Spec):
    """How consumers pick the new value up before the old one is retired."""

    strategy: str

    @property
    def confirms(self) -> bool:
        """Whether being done means the consumers moved (a strategy of a plug-in: no, unless
        it says so)."""
        return False

    @property
    def retry_budget(self) -> timedelta | None:
        """How long retryable failures are retried (None: the policy's ``max_attempts``)."""
        return None

    @field_validator("strategy")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in RESTART_STRATEGIES:
            raise ValueError(
                f"unknown restart strategy {short_repr(value)}; use {', '.join(RESTART_STRATEGIES)}"
            )
        return value


def register_restart_strategy(name: str, schema: type[RestartStrategy], runner: str) -> None:
    """Register ``name``: its policy schema and ``"package.module:function"`` that runs it."""
    if ":" not in runner:
        raise ConfigurationError(
            f"A restart runner must look like 'module:function', not {runner!r}."
        )
    RESTART_STRATEGIES.register(name, RestartEntry(schema, runner))


def parse_strategy(value: object) -> object:
    """A ``restart`` mapping validated with its strategy's schema (None: ``none``)."""
    if value is None:
        return NoRestart()
    if not isinstance(value, dict):
        return value
    strategy = value.get("strategy", "none")
    entry = RESTART_STRATEGIES.aliases.get(strategy) if isinstance(strategy, str) else None
    if entry is None:
        return RestartStrategy.model_validate({"strategy": strategy})  # raises, located
    return entry.schema.model_validate(value)


_runners: dict[str, Callable[..., Any]] = {}


def strategy_runner(name: str) -> Callable[..., Any]:
    """The runner of strategy ``name``, imported on first use."""
    runner = _runners.get(name)
    if runner is None:
        entry: RestartEntry = RESTART_STRATEGIES.resolve(name)
        runner = _runners[name] = import_object(entry.runner, what="restart runner")
    return runner


#: Default ``retry_for`` of ``command`` and ``webhook`` (``acknowledge`` waits ``timeout``).
_RETRY_FOR = timedelta(minutes=10)


class RetriedRestart(RestartStrategy):
    """A strategy whose failures (a command's non-zero exit, a webhook's non-2xx or silence) are
    retried with the run's backoff for ``retry_for``; success confirms consumers moved."""

    retry_for: Duration = Field(default=_RETRY_FOR, validate_default=True)

    @field_validator("retry_for")
    @classmethod
    def _retry_window(cls, value: timedelta) -> timedelta:
        if not timedelta(0) < value <= timedelta(days=1):
            raise ValueError("retry_for must be above 0 and at most 1d")
        return value

    @property
    def confirms(self) -> bool:
        return True

    @property
    def retry_budget(self) -> timedelta:
        return self.retry_for


class NoRestart(RestartStrategy):
    """Nothing to wait for: consumers re-read the secret themselves (cache TTL)."""

    strategy: Literal["none"] = "none"


class AcknowledgeRestart(RestartStrategy):
    """Publish the promotion; wait until every live consumer of the secret acknowledged it."""

    strategy: Literal["acknowledge"] = "acknowledge"
    timeout: Duration = timedelta(minutes=10)
    on_timeout: Literal["fail", "proceed"] = "fail"

    @property
    def confirms(self) -> bool:
        # proceeding without the silent consumers confirms nothing about them
        return self.on_timeout == "fail"

    @property
    def retry_budget(self) -> timedelta:
        return self.timeout


class CommandRestart(RetriedRestart):
    """Run commands in order (e.g. ``kubectl rollout restart``, then ``kubectl rollout status``)."""

    strategy: Literal["command"] = "command"
    commands: Annotated[tuple[tuple[str, ...], ...], Field(min_length=1, max_length=10)]
    #: Each command's; all of them together must fit the step budget.
    timeout: Duration = Field(default=timedelta(minutes=2), validate_default=True)
    #: Worker environment variables the commands may see (e.g. KUBECONFIG); nothing else is
    #: passed but PATH, HOME, locale and KEYTURN_SECRET/VERSION/RUN_ID, so a command that prints
    #: its environment cannot leak the worker's own credentials into the logs.
    pass_env: Annotated[tuple[str, ...], Field(max_length=50)] = ()
    #: A user name: the commands run with its uid, gid and groups (the worker must be root to
    #: switch); unset, they run as the worker, which lets them read the worker's environment.
    run_as: str | None = None

    @field_validator("run_as")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                pwd.getpwnam(value)
            except KeyError:
                raise ValueError(
                    f"run_as: there is no user {short_repr(value)} on this machine "
                    "(create it, or name an existing unprivileged user such as nobody)"
                ) from None
        return value

    @field_validator("pass_env")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", name):
                raise ValueError(f"pass_env: {name[:40]!r} is not an environment variable name")
        return value

    @field_validator("commands")
    @classmethod
    def _argv(cls, value: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, ...], ...]:
        for argv in value:
            if not argv or not argv[0]:
                raise ValueError("each command is a non-empty argv list, e.g. [kubectl, ...]")
            if any("\x00" in part for part in argv):
                raise ValueError("command arguments cannot contain NUL characters")
        return value

    @field_validator("timeout")
    @classmethod
    def _bounded(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("timeout must be above 0")
        commands = info.data.get("commands")
        if commands:
            what = f"{len(commands)} command(s) of timeout {_human(value)}"
            check_budget(value * len(commands), what)
        return value


class WebhookRestart(RetriedRestart):
    """POST the promotion to a URL, signed with HMAC-SHA256 (header ``X-Keyturn-Signature``)."""

    strategy: Literal["webhook"] = "webhook"
    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$", max_length=2000)]
    #: Name of the secret (in the same backend) that holds the HMAC key.
    hmac_secret: str
    timeout: Duration = Field(default=timedelta(seconds=10), validate_default=True)
    #: Networks (CIDR) the URL may resolve into although they are not public: loopback,
    #: private, link-local... are refused otherwise (rotation/policy/destinations.py).
    allow_networks: Annotated[tuple[str, ...], Field(max_length=20)] = ()
    #: A PEM file of the CA(s) to trust for an https URL instead of the system's.
    ca_file: str | None = None

    @property
    def allowed(self) -> tuple[IPNetwork, ...]:
        """``allow_networks`` as networks."""
        return parse_networks(self.allow_networks)

    @field_validator("allow_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        parse_networks(value)
        return value

    @field_validator("url")
    @classmethod
    def _host(cls, value: str) -> str:
        try:
            parts = urllib.parse.urlsplit(value)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise ValueError(f"not a valid URL: {exc}") from None
        if not parts.hostname:
            raise ValueError("the URL names no host")
        return value

    @model_validator(mode="after")
    def _literal_address(self) -> WebhookRestart:
        """A URL whose host is an IP address is checked now (a name is checked when called)."""
        if self.ca_file is not None and not self.url.startswith("https://"):
            raise ValueError("'ca_file' applies to an https URL only")
        host = urllib.parse.urlsplit(self.url).hostname or ""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return self
        reason = refusal(address, self.allowed)
        if reason is not None:
            raise ValueError(
                f"url: {address} is {reason}; a webhook may call it only if the policy allows "
                f"it explicitly (allow_networks: [{_suggest(address)}])"
            )
        return self

    @field_validator("hmac_secret")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_secret_name(value)

    @field_validator("timeout")
    @classmethod
    def _bounded(cls, value: timedelta) -> timedelta:
        if not timedelta(0) < value <= timedelta(minutes=1):
            raise ValueError("timeout must be above 0 and at most 1m")
        check_budget(value, f"a webhook call of timeout {_human(value)}")
        return value


def _suggest(address: IPAddress) -> str:
    """A network to put in ``allow_networks`` for ``address`` (for messages)."""
    prefix = 8 if address.is_loopback and address.version == 4 else address.max_prefixlen
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def _wave(value: object) -> object:
    parsed = parse_strategy(value)
    if isinstance(parsed, WavesRestart):
        raise ValueError("a wave cannot itself be 'waves'")
    return parsed


class WavesRestart(RestartStrategy):
    """Strategies one after another, with at most ``concurrency`` runs of the policy restarting."""

    strategy: Literal["waves"] = "waves"
    waves: Annotated[
        tuple[Annotated[SerializeAsAny[RestartStrategy], BeforeValidator(_wave)], ...],
        Field(max_length=10),
    ]
    concurrency: StrictInt = Field(default=1, ge=1, le=1000)

    @property
    def confirms(self) -> bool:
        return all(wave.confirms for wave in self.waves)

    @field_validator("waves")
    @classmethod
    def _some(cls, value: tuple[RestartStrategy, ...]) -> tuple[RestartStrategy, ...]:
        # checked after the items, so a list of bad waves is not also reported as empty
        if not value:
            raise ValueError("list at least one wave")
        return value


_RUNNERS = "rotation.run.restart"
register_restart_strategy("none", NoRestart, f"{_RUNNERS}:no_restart")
register_restart_strategy("acknowledge", AcknowledgeRestart, f"{_RUNNERS}.acknowledge:acknowledge")
register_restart_strategy("command", CommandRestart, f"{_RUNNERS}.command:run_commands")
register_restart_strategy("webhook", WebhookRestart, f"{_RUNNERS}.webhook:call_webhook")
register_restart_strategy("waves", WavesRestart, f"{_RUNNERS}:run_waves")
