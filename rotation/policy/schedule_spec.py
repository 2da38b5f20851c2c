"""When a policy is due (``schedule``: an interval or a UTC cron) and may start (``window``)."""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Annotated

from croniter import croniter
from pydantic import (
    BeforeValidator,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from rotation.durations import Duration, format_duration
from rotation.schema import Spec, short_repr

__all__ = ["DAYS", "ScheduleSpec", "WindowSpec", "cron_min_gap"]

_CRON_ALIASES = {"@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"}
#: croniter's H (hashed) and R (random) fields would make beats disagree on due times.
_NONDETERMINISTIC_CRON = re.compile(r"(?i)(?<![a-z])[hr](?![a-z])")
_CRON_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


class ScheduleSpec(Spec):
    """When a secret is due: ``every`` interval after the last rotation, or a UTC ``cron``;
    and/or ``renew_before`` its current credential expires (kinds whose credentials expire)."""

    every: Duration | None = None
    cron: str | None = None
    #: Renew this long before the current credential's expiry (a certificate's not_after).
    renew_before: Duration | None = None

    @field_validator("every", "renew_before")
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
        if self.every is not None and self.cron is not None:
            raise ValueError(
                "give either 'every' (e.g. 30d) or 'cron' (e.g. '0 3 * * 0'), not both"
            )
        if self.every is None and self.cron is None and self.renew_before is None:
            raise ValueError(
                "give 'every' (e.g. 30d), 'cron' (e.g. '0 3 * * 0') or, for credentials that "
                "expire, 'renew_before' (e.g. 30d)"
            )
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        data: dict[str, object] = handler(self)
        if data.get("renew_before") is None:
            data.pop("renew_before", None)  # a policy without it keeps its spec hash
        return data

    def min_gap(self) -> timedelta:
        """The shortest time between two due times (the interval, or the cron's tightest gap;
        with ``renew_before`` alone, the renewal's head start)."""
        if self.every is not None:
            return self.every
        if self.cron is not None:
            return cron_min_gap(self.cron) or timedelta(0)
        return self.renew_before or timedelta(0)

    def describe(self) -> str:
        parts = []
        if self.every is not None:
            parts.append(f"every {format_duration(self.every)}")
        if self.cron is not None:
            parts.append(f"cron {self.cron}")
        if self.renew_before is not None:
            parts.append(f"{format_duration(self.renew_before)} before expiry")
        return " or ".join(parts)


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


class WindowSpec(Spec):
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
