"""The rotation policy model: which secrets, which rotator kind, when and how; its spec hash."""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from datetime import time, timedelta
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializeAsAny,
    StrictBool,
    StrictInt,
    ValidationInfo,
    field_validator,
)

from rotation.durations import Duration, format_duration
from rotation.errors import ConfigurationError
from rotation.generator import GeneratorPolicy
from rotation.policy.grace import DEFAULT_CONSUMER_CACHE_TTL, revoke_grace_problem
from rotation.policy.restart import NoRestart, RestartStrategy, parse_strategy
from rotation.policy.schedule_spec import ScheduleSpec, WindowSpec
from rotation.rotators.registry import ROTATORS, expiry_reader, target_schema
from rotation.schema import Spec, check_pattern, is_glob, short_repr

__all__ = ["Policy"]

_POLICY_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, str) else value


class _NoTarget(Spec):
    """Stands in for the target while ``kind`` itself is invalid (its error is reported)."""

    model_config = ConfigDict(extra="allow", frozen=True)


class Policy(Spec):
    """One rotation policy: which secrets, which rotator kind, when, and how."""

    name: str = Field(max_length=100)
    secret: str | None = Field(default=None, exclude=True, repr=False)
    #: Secret names or fnmatch globs (case-sensitive; ``*`` also matches ``/``).
    secrets: Annotated[tuple[str, ...], BeforeValidator(_one_or_many)] = Field(
        default=(), validate_default=True
    )
    #: A provider alias; None means the process's SECRETS_PROVIDER.
    provider: str | None = None
    kind: str
    schedule: ScheduleSpec
    window: WindowSpec | None = None
    jitter: Duration = timedelta(0)
    restart: SerializeAsAny[RestartStrategy] = Field(default_factory=NoRestart)
    generator: GeneratorPolicy = Field(default_factory=GeneratorPolicy)
    target: SerializeAsAny[BaseModel] = Field(default=None, validate_default=True)
    #: How long consumers may serve a value from their cache (SECRETS_CACHE_TTL).
    consumer_cache_ttl: Duration = DEFAULT_CONSUMER_CACHE_TTL
    #: Grace between the restart step and revoking the old credential (after kind, restart,
    #: target and consumer_cache_ttl: its check needs them; see rotation/policy/grace.py).
    retire_after: Duration = Field(default=timedelta(0), validate_default=True)
    max_attempts: StrictInt = Field(default=5, ge=1, le=50)
    paused: StrictBool = False

    _source: str | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _POLICY_NAME.fullmatch(value):
            raise ValueError(
                f"invalid policy name {short_repr(value)}: use lowercase letters, digits, "
                "'_', '.' and '-', starting with a letter or digit"
            )
        return value

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        return None if value is None else check_pattern(value)

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if "secret" not in info.data:
            return value  # `secret` is invalid and already reported
        shorthand = info.data["secret"]
        if shorthand is not None and value:
            raise ValueError("give either 'secret' or 'secrets', not both")
        if shorthand is not None:
            return (shorthand,)
        if not value:
            raise ValueError("required: the secret names or globs this policy rotates")
        for pattern in value:
            check_pattern(pattern)
        duplicates = sorted({p for p in value if value.count(p) > 1})
        if duplicates:
            raise ValueError(f"{duplicates[0]!r} is listed twice")
        return value

    @field_validator("provider")
    @classmethod
    def _provider(cls, value: str | None) -> str | None:
        from rotation.providers.registry import PROVIDER_ALIASES

        if value is not None and value not in PROVIDER_ALIASES:
            raise ValueError(_unknown("provider", value, PROVIDER_ALIASES))
        return value

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value not in ROTATORS:
            raise ValueError(_unknown("kind", value, ROTATORS))
        return value

    @field_validator("jitter")
    @classmethod
    def _jitter(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        schedule = info.data.get("schedule")
        if value and isinstance(schedule, ScheduleSpec) and value >= schedule.min_gap():
            raise ValueError(
                f"jitter {format_duration(value)} must be less than the interval "
                f"({format_duration(schedule.min_gap())})"
            )
        return value

    # --- renew_before (credentials that expire) ---------------------------------------------

    @field_validator("schedule")
    @classmethod
    def _renew_before(cls, value: ScheduleSpec, info: ValidationInfo) -> ScheduleSpec:
        kind = info.data.get("kind")
        if value.renew_before is None or kind is None:
            return value
        try:
            expires = expiry_reader(kind)
        except ConfigurationError:
            return value  # the kind's module is broken: the target's error says so
        if expires is None:
            raise ValueError(
                f"renew_before needs a kind whose credentials expire (certificate); kind "
                f"{kind!r} has no expiry: use 'every' or 'cron'"
            )
        return value

    @field_validator("restart", mode="before")
    @classmethod
    def _restart(cls, value: object) -> object:
        return parse_strategy(dict(value) if isinstance(value, Mapping) else value)

    @field_validator("target", mode="before")
    @classmethod
    def _target(cls, value: object, info: ValidationInfo) -> object:
        kind = info.data.get("kind")
        if kind is None:
            return _NoTarget()
        try:
            model = target_schema(kind)
        except ConfigurationError as exc:  # the kind's module is broken or declares no Target
            raise ValueError(exc.message) from None
        if isinstance(value, model):
            return value
        return model.model_validate({} if value is None else value)

    @field_validator("retire_after")
    @classmethod
    def _revoke_grace(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        """The defaults rule (rotation/policy/grace.py); skipped while a field it needs is
        itself invalid (that error is reported)."""
        data = info.data
        if not all(k in data for k in ("kind", "restart", "target", "consumer_cache_ttl")):
            return value
        if isinstance(data["target"], _NoTarget):
            return value
        problem = revoke_grace_problem(
            data["kind"], data["target"], data["restart"], value, data["consumer_cache_ttl"]
        )
        if problem is not None:
            raise ValueError(problem)
        return value

    @staticmethod
    def is_glob(pattern: str) -> bool:
        """True if ``pattern`` has fnmatch wildcards (``*``, ``?``, ``[...]``)."""
        return is_glob(pattern)

    @property
    def patterns(self) -> tuple[str, ...]:
        """The secret names and globs, ``secret:`` shorthand included."""
        return self.secrets

    def matches(self, secret_name: str) -> bool:
        """True if ``secret_name`` is one of the names or matches one of the globs."""
        return any(fnmatch.fnmatchcase(secret_name, p) for p in self.secrets)

    @property
    def interval(self) -> timedelta | None:
        """The ``every`` interval; None for cron schedules."""
        return self.schedule.every

    @property
    def source(self) -> str | None:
        """``file:line`` the policy was loaded from, when it came from a file."""
        return self._source

    def target_settings(self) -> dict[str, Any]:
        """The validated ``target`` block with defaults, as plain data for the rotator."""
        return self.target.model_dump()

    @property
    def spec_hash(self) -> str:
        """sha256 of the normalized policy: changes exactly when the policy's meaning does."""
        data = _canonical(self.model_dump())
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def to_spec(self) -> dict[str, Any]:
        """Plain JSON data that validates back into an equal policy (what the ledger stores)."""
        data = _canonical(self.model_dump())
        assert isinstance(data, dict)
        return data

    def __hash__(self) -> int:
        return hash(self.spec_hash)


def _canonical(value: object) -> object:
    """Plain JSON data that does not depend on pydantic's serialization choices."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
        return int(seconds) if seconds.is_integer() else seconds
    if isinstance(value, time):
        return value.strftime("%H:%M")
    return value


def _unknown(what: str, value: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(value, list(known), n=1)
    tip = f"did you mean {close[0]!r}?" if close else f"use {', '.join(sorted(known))}"
    return f"unknown {what} {short_repr(value)}; {tip}"
