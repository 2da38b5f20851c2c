"""Rotation policies: the schema of ``schedules/*.yaml`` and loading with file/line/field errors.

A file holds one policy mapping or ``policies: [...]``. A file with any error is refused whole
(no half-applied intent); other files still load. The format is described in
``schedules/README.md``.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import itertools
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from croniter import croniter
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializeAsAny,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rotation.errors import ConfigurationError, InvalidSecretName
from rotation.generator import GeneratorPolicy
from rotation.names import MAX_NAME_LENGTH, validate_name
from rotation.policy_files import (
    Loc,
    PolicyError,
    PolicyFileError,
    YamlDocument,
    parse_yaml,
    read_yaml,
    short_repr,
    validation_errors,
)

__all__ = [
    "DAYS",
    "KIND_TARGETS",
    "RESTART_STRATEGIES",
    "NoRestart",
    "Policy",
    "PolicyConflictError",
    "PolicyError",
    "PolicyFileError",
    "PolicySet",
    "PostgresTarget",
    "RandomTarget",
    "RestartStrategy",
    "ScheduleSpec",
    "WindowSpec",
    "default_schedules_dir",
    "format_duration",
    "load_policies",
    "load_policy_file",
    "load_policy_text",
    "parse_duration",
    "resolve_secret_policies",
]

_UNITS = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_DURATION = re.compile(r"(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_DURATION_HINT = "use 10s, 15m, 12h, 30d, 2w"
#: Keeps every computed due time far from datetime's year-9999 limit.
MAX_DURATION = timedelta(days=36_500)


def parse_duration(value: object) -> timedelta:
    """``"30d"``, ``"1h30m"``, ``"2w"`` or an int of seconds -> ``timedelta``; else ValueError."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str) and value.strip().isdigit():
        seconds = int(value.strip())
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip().lower())):
        if not any(match.groups()):
            raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")
        seconds = sum(int(n) * _UNITS[u] for n, u in zip(match.groups(), _UNITS, strict=True) if n)
    else:
        raise ValueError(f"invalid duration {short_repr(value)}: {_DURATION_HINT}")
    if seconds < 0:
        raise ValueError(f"invalid duration {short_repr(value)}: must not be negative")
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"invalid duration {short_repr(value)}: longer than 100 years")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """The policy spelling of ``delta``, e.g. ``30d``, ``2w``, ``1h30m``."""
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0s"
    if seconds % _UNITS["w"] == 0:
        return f"{seconds // _UNITS['w']}w"
    parts = []
    for unit, size in list(_UNITS.items())[1:]:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- schedule and window ---------------------------------------------------------------------

_CRON_ALIASES = {"@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"}
#: croniter's H (hashed) and R (random) fields would make beats disagree on due times.
_NONDETERMINISTIC_CRON = re.compile(r"(?i)(?<![a-z])[hr](?![a-z])")
_CRON_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


class ScheduleSpec(_Spec):
    """When a secret is due: ``every`` interval after the last rotation, or a UTC ``cron``."""

    every: Duration | None = None
    cron: str | None = None

    @field_validator("every")
    @classmethod
    def _positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("must be longer than 0s")
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        expr = " ".join(value.split())
        hint = "use 5 fields: minute hour day-of-month month day-of-week, e.g. '0 3 * * 0' (UTC)"
        if expr.startswith("@"):
            if expr.lower() not in _CRON_ALIASES:
                raise ValueError(f"invalid cron {short_repr(value)}: {hint}")
        elif len(expr.split(" ")) != 5 or _NONDETERMINISTIC_CRON.search(expr):
            raise ValueError(f"invalid cron {short_repr(value)}: {hint}")
        try:
            valid = bool(croniter.is_valid(expr))
        except Exception:  # croniter's parser raises assorted types on odd input
            valid = False
        if not valid:
            raise ValueError(f"invalid cron {short_repr(value)}: {hint}")
        if cron_min_gap(expr) is None:
            raise ValueError(f"cron {short_repr(value)} never fires")
        return expr

    @model_validator(mode="after")
    def _one_of(self) -> ScheduleSpec:
        if (self.every is None) == (self.cron is None):
            raise ValueError(
                "give either 'every' (e.g. 30d) or 'cron' (e.g. '0 3 * * 0'), not both"
            )
        return self

    def min_gap(self) -> timedelta:
        """The shortest time between two due times (the interval, or the cron's tightest gap)."""
        if self.every is not None:
            return self.every
        return cron_min_gap(self.cron or "") or timedelta(0)

    def describe(self) -> str:
        return f"every {format_duration(self.every)}" if self.every else f"cron {self.cron}"


def cron_min_gap(expr: str, samples: int = 16) -> timedelta | None:
    """The smallest gap between the next ``samples`` firings from a fixed date; None if none."""
    try:
        it = croniter(expr, _CRON_EPOCH)
        times: list[datetime] = [it.get_next(datetime) for _ in range(samples)]
    except Exception:  # CroniterBadDateError and friends: it never fires
        return None
    return min(b - a for a, b in itertools.pairwise(times))


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_HHMM = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


def _parse_hhmm(value: object) -> object:
    if isinstance(value, time):
        return value
    if isinstance(value, str) and (match := _HHMM.fullmatch(value.strip())):
        return time(int(match[1]), int(match[2]))
    raise ValueError(f"invalid time {short_repr(value)}: use 'HH:MM' (24-hour, UTC), e.g. '02:00'")


def _parse_days(value: object) -> object:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        return value
    days: set[str] = set()
    for item in value:
        text = item.strip().lower() if isinstance(item, str) else ""
        day = text if text in DAYS else DAYS[_FULL_DAYS.index(text)] if text in _FULL_DAYS else ""
        if not day:
            close = difflib.get_close_matches(text, DAYS, n=1) or difflib.get_close_matches(
                text, _FULL_DAYS, n=1
            )
            tip = f"; did you mean {close[0]!r}?" if close else f"; use {', '.join(DAYS)}"
            raise ValueError(f"unknown day {short_repr(item)}{tip}")
        days.add(day)
    return tuple(d for d in DAYS if d in days)


class WindowSpec(_Spec):
    """When rotations may start (UTC): ``days``, ``start`` to ``end`` (overnight if end < start)."""

    days: Annotated[tuple[str, ...], BeforeValidator(_parse_days)] = DAYS
    start: Annotated[time, BeforeValidator(_parse_hhmm)] | None = None
    end: Annotated[time, BeforeValidator(_parse_hhmm)] | None = None

    @model_validator(mode="after")
    def _check(self) -> WindowSpec:
        if not self.days:
            raise ValueError("'days' needs at least one day")
        if (self.start is None) != (self.end is None):
            raise ValueError("give both 'start' and 'end' (or neither, for all day)")
        if self.start is not None and self.start == self.end:
            raise ValueError("'start' equals 'end'; omit both for an all-day window")
        return self

    @property
    def opens(self) -> time:
        return self.start or time(0)

    @property
    def length(self) -> timedelta:
        """How long the window stays open once it opens (24h when all day)."""
        if self.start is None or self.end is None:
            return timedelta(days=1)
        day = timedelta(days=1)
        gap = _since_midnight(self.end) - _since_midnight(self.start)
        return gap % day

    def describe(self) -> str:
        days = "every day" if self.days == DAYS else _day_ranges(self.days)
        if self.start is None or self.end is None:
            return days
        return f"{days} {self.start:%H:%M}-{self.end:%H:%M}"


def _day_ranges(days: Sequence[str]) -> str:
    """``mon,tue,wed,thu,fri,sun`` -> ``mon-fri,sun``."""
    runs: list[list[int]] = []
    for index in sorted(DAYS.index(d) for d in days):
        if runs and runs[-1][-1] == index - 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    return ",".join(
        f"{DAYS[r[0]]}-{DAYS[r[-1]]}" if len(r) > 2 else ",".join(DAYS[i] for i in r) for r in runs
    )


def _since_midnight(at: time) -> timedelta:
    return timedelta(hours=at.hour, minutes=at.minute)


# --- restart strategies and kind targets -----------------------------------------------------


class RestartStrategy(_Spec):
    """How consumers pick the new value up before the old one is retired."""

    strategy: str

    @field_validator("strategy")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in RESTART_STRATEGIES:
            raise ValueError(
                f"unknown restart strategy {short_repr(value)}; use {', '.join(RESTART_STRATEGIES)}"
            )
        return value


class NoRestart(RestartStrategy):
    """Nothing to wait for: consumers re-read the secret themselves (cache TTL)."""

    strategy: Literal["none"] = "none"


RESTART_STRATEGIES: dict[str, type[RestartStrategy]] = {"none": NoRestart}

_ISSUER = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_PG_ROLE = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")


class RandomTarget(_Spec):
    """``random``: an optional issuer hook told about each new value."""

    issuer: str | None = None

    @field_validator("issuer")
    @classmethod
    def _import_path(cls, value: str | None) -> str | None:
        if value is not None and not _ISSUER.fullmatch(value):
            raise ValueError(f"invalid issuer {short_repr(value)}: use 'package.module:attr'")
        return value


class PostgresTarget(_Spec):
    """``postgres``: rotate one role's password, or alternate between two roles."""

    mode: Literal["single", "alternating"] = "alternating"
    #: The login that creates and alters the two users (alternating mode).
    admin_secret: str | None = Field(default=None, validate_default=True)
    #: The two roles to alternate; default: the secret's username and username + "_clone".
    users: tuple[str, str] | None = None
    connect_timeout: float = Field(default=5, gt=0, le=300)

    @field_validator("admin_secret")
    @classmethod
    def _admin(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("mode") == "alternating":
            raise ValueError("required for mode 'alternating' (the login that manages the users)")
        if value is not None:
            _check_pattern(value, allow_glob=False)
        return value

    @field_validator("users")
    @classmethod
    def _roles(cls, value: tuple[str, str] | None, info: ValidationInfo) -> tuple[str, str] | None:
        if value is None:
            return None
        if info.data.get("mode") == "single":
            raise ValueError("only mode 'alternating' uses two users")
        for role in value:
            if not _PG_ROLE.fullmatch(role):
                raise ValueError(f"invalid Postgres role name {short_repr(role)}")
        if value[0] == value[1]:
            raise ValueError("the two users must differ")
        return value


class _NoTarget(_Spec):
    """Stands in for the target while ``kind`` itself is invalid (its error is reported)."""

    model_config = ConfigDict(extra="allow", frozen=True)


#: Rotator kind -> the model of its ``target`` block. New kinds add themselves here.
KIND_TARGETS: dict[str, type[BaseModel]] = {"random": RandomTarget, "postgres": PostgresTarget}


# --- the policy ------------------------------------------------------------------------------

_POLICY_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_GLOB_CHARS = "*?["
_PATTERN_CHARS = re.compile(r"[A-Za-z0-9_.\-/*?\[\]!^]+")


def _check_pattern(value: str, *, allow_glob: bool = True) -> str:
    if allow_glob and Policy.is_glob(value):
        if len(value) > MAX_NAME_LENGTH or not _PATTERN_CHARS.fullmatch(value):
            raise ValueError(
                f"invalid glob {short_repr(value)}: use name characters and * ? [...], "
                "e.g. 'api_key_*'"
            )
        return value
    try:
        return validate_name(value)
    except InvalidSecretName as exc:
        raise ValueError(exc.message) from None


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, str) else value


class Policy(_Spec):
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
    retire_after: Duration = timedelta(0)
    restart: SerializeAsAny[RestartStrategy] = Field(default_factory=NoRestart)
    generator: GeneratorPolicy = Field(default_factory=GeneratorPolicy)
    target: SerializeAsAny[BaseModel] = Field(default=None, validate_default=True)
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
        return None if value is None else _check_pattern(value)

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
            _check_pattern(pattern)
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
        if value not in KIND_TARGETS:
            raise ValueError(_unknown("kind", value, KIND_TARGETS))
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

    @field_validator("restart", mode="before")
    @classmethod
    def _restart(cls, value: object) -> object:
        if value is None:
            return NoRestart()
        if not isinstance(value, Mapping):
            return value
        strategy = value.get("strategy", "none")
        model = RESTART_STRATEGIES.get(strategy) if isinstance(strategy, str) else None
        if model is None:
            return RestartStrategy.model_validate({"strategy": strategy})  # raises, located
        return model.model_validate(value)

    @field_validator("target", mode="before")
    @classmethod
    def _target(cls, value: object, info: ValidationInfo) -> object:
        model = KIND_TARGETS.get(info.data.get("kind", ""))
        if model is None:
            return _NoTarget()
        if isinstance(value, model):
            return value
        return model.model_validate({} if value is None else value)

    @staticmethod
    def is_glob(pattern: str) -> bool:
        """True if ``pattern`` has fnmatch wildcards (``*``, ``?``, ``[...]``)."""
        return any(c in pattern for c in _GLOB_CHARS)

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


# --- loading ---------------------------------------------------------------------------------

_MODELS_BY_FIELD: dict[str, type[BaseModel]] = {
    "schedule": ScheduleSpec,
    "window": WindowSpec,
    "generator": GeneratorPolicy,
}


def _fields_at(doc: YamlDocument, policy_loc: Loc) -> Callable[[Loc], Sequence[str]]:
    """Field names of the model at a path inside one policy, for "did you mean"."""

    def known(loc: Loc) -> Sequence[str]:
        if not loc:
            return [f for f in Policy.model_fields]
        model: type[BaseModel] | None = _MODELS_BY_FIELD.get(str(loc[0]))
        if loc[0] == "target":
            data = _get(doc.data, policy_loc)
            kind = data.get("kind") if isinstance(data, dict) else None
            model = KIND_TARGETS.get(kind) if isinstance(kind, str) else None
        elif loc[0] == "restart":
            model = NoRestart
        return list(model.model_fields) if model is not None and len(loc) == 1 else []

    return known


def _get(data: object, loc: Loc) -> object:
    for part in loc:
        if isinstance(data, dict) and isinstance(part, str):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return None
    return data


def _policies_in(doc: YamlDocument) -> list[tuple[Loc, Policy]]:
    """Validate every policy of ``doc``; raise PolicyFileError with all the errors found."""
    data = doc.data
    if isinstance(data, dict) and "policies" in data:
        extra = [k for k in data if k != "policies"]
        if extra:
            raise PolicyFileError(
                [doc.error((k,), "unknown top-level key next to 'policies'") for k in extra]
            )
        items = data["policies"]
        if not isinstance(items, list) or not items:
            raise PolicyFileError(
                [doc.error(("policies",), "expected a non-empty list of policies")]
            )
        candidates: list[tuple[Loc, object]] = [(("policies", i), p) for i, p in enumerate(items)]
    elif isinstance(data, dict):
        candidates = [((), data)]
    else:
        raise PolicyFileError(
            [doc.error((), "expected a policy mapping or 'policies: [...]' at the top level")]
        )
    errors: list[PolicyError] = []
    result: list[tuple[Loc, Policy]] = []
    for loc, item in candidates:
        if not isinstance(item, dict):
            errors.append(doc.error(loc, "expected a policy mapping (name, secrets, kind, ...)"))
            continue
        try:
            policy = Policy.model_validate(item)
        except ValidationError as exc:
            errors.extend(validation_errors(exc, doc, loc, _fields_at(doc, loc)))
            continue
        policy._source = f"{doc.name}:{doc.line_of(loc)}"
        result.append((loc, policy))
    if errors:
        raise PolicyFileError(sorted(errors, key=lambda e: e.line or 0))
    return result


def _check_unique(
    doc: YamlDocument, found: list[tuple[Loc, Policy]], names: dict[str, str], exact: dict[str, str]
) -> list[PolicyError]:
    """Policy names unique, and no exact secret name listed by two policies."""
    errors: list[PolicyError] = []
    for loc, policy in found:
        if policy.name in names:
            errors.append(
                doc.error(
                    (*loc, "name"),
                    f"policy {policy.name!r} is already defined at {names[policy.name]}",
                )
            )
        names.setdefault(policy.name, f"{doc.name}:{doc.line_of((*loc, 'name'))}")
        for pattern in policy.patterns:
            if pattern in exact and exact[pattern] != policy.name:
                errors.append(
                    doc.error(
                        (*loc, "secrets" if "secrets" in _keys(doc, loc) else "secret"),
                        f"{pattern!r} is already claimed by policy {exact[pattern]!r}",
                    )
                )
            exact.setdefault(pattern, policy.name)
    return errors


def _keys(doc: YamlDocument, loc: Loc) -> Sequence[str]:
    data = _get(doc.data, loc)
    return list(data) if isinstance(data, dict) else []


def _load_doc(doc: YamlDocument, names: dict[str, str], exact: dict[str, str]) -> list[Policy]:
    found = _policies_in(doc)
    errors = _check_unique(doc, found, names, exact)
    if errors:
        raise PolicyFileError(errors)
    return [policy for _, policy in found]


def load_policy_text(text: str, name: str = "<string>") -> list[Policy]:
    """The policies in one YAML document; raises :class:`PolicyFileError` with every error."""
    return _load_doc(parse_yaml(text, name), {}, {})


def load_policy_file(path: str | os.PathLike[str]) -> list[Policy]:
    """The policies in one file; raises :class:`PolicyFileError` with every error."""
    return _load_doc(read_yaml(Path(path)), {}, {})


def default_schedules_dir() -> Path:
    """``$KEYTURN_SCHEDULES``, else ``./schedules``."""
    return Path(os.environ.get("KEYTURN_SCHEDULES") or "schedules")


@dataclass
class PolicySet:
    """Every valid policy found, and every error; a file with an error adds no policy."""

    policies: list[Policy] = field(default_factory=list)
    errors: list[PolicyError] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def get(self, name: str) -> Policy | None:
        return next((p for p in self.policies if p.name == name), None)


def policy_files(directory_or_file: Path) -> list[Path]:
    """``*.yaml`` and ``*.yml`` in a directory (not recursive, hidden files skipped), by name."""
    if directory_or_file.is_dir():
        return sorted(
            p
            for p in directory_or_file.iterdir()
            if p.suffix in (".yaml", ".yml") and not p.name.startswith(".") and p.is_file()
        )
    return [directory_or_file]


def load_policies(directory_or_file: str | os.PathLike[str] | None = None) -> PolicySet:
    """Load a file or every policy file of a directory (default :func:`default_schedules_dir`).

    A name defined in two files is an error of the later file (by file name), which is then
    refused as a whole, like any file with an error.
    """
    root = Path(directory_or_file) if directory_or_file is not None else default_schedules_dir()
    if not root.exists():
        raise ConfigurationError(
            f"Policy path not found: {str(root)!r}. Pass a file or directory, "
            "or set KEYTURN_SCHEDULES."
        )
    result = PolicySet(files=policy_files(root))
    names: dict[str, str] = {}
    exact: dict[str, str] = {}
    for path in result.files:
        # Claims of a refused file must not block later files: stage them, keep on success.
        staged_names, staged_exact = dict(names), dict(exact)
        try:
            result.policies.extend(_load_doc(read_yaml(path), staged_names, staged_exact))
        except PolicyFileError as exc:
            result.errors.extend(exc.errors)
            continue
        names, exact = staged_names, staged_exact
    return result


class PolicyConflictError(ConfigurationError):
    """Two policies claim the same secret."""

    def __init__(self, conflicts: dict[str, tuple[str, ...]], resolved: dict[str, Policy]) -> None:
        #: secret -> the names of the policies that claim it (equally specifically).
        self.conflicts = conflicts
        #: Every secret with exactly one policy: safe to act on.
        self.resolved = resolved
        shown = "; ".join(
            f"{secret!r} by {', '.join(repr(n) for n in names)}"
            for secret, names in sorted(conflicts.items())[:5]
        )
        more = f" (and {len(conflicts) - 5} more)" if len(conflicts) > 5 else ""
        super().__init__(
            f"Secrets claimed by more than one policy: {shown}{more}. "
            "Narrow the globs or list the secret by name in one policy."
        )


def resolve_secret_policies(
    policies: Iterable[Policy], secret_names: Iterable[str]
) -> dict[str, Policy]:
    """Each secret's policy. A policy naming the secret exactly beats one matching it by glob.

    Two policies claiming a secret equally (two exact names or two globs) raise
    :class:`PolicyConflictError`, whose ``.resolved`` still holds every unambiguous secret.
    """
    policies = list(policies)
    resolved: dict[str, Policy] = {}
    conflicts: dict[str, tuple[str, ...]] = {}
    for secret in secret_names:
        exact = [p for p in policies if secret in p.patterns]
        claims = exact or [p for p in policies if p.matches(secret)]
        if len(claims) == 1:
            resolved[secret] = claims[0]
        elif claims:
            conflicts[secret] = tuple(p.name for p in claims)
    if conflicts:
        raise PolicyConflictError(conflicts, resolved)
    return resolved


# The richer restart strategies live in their own module and register themselves here.
from rotation import restart_specs as _restart_specs  # noqa: E402, F401
