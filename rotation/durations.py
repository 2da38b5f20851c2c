"""Durations in policy files: ``30d``, ``1h30m``, ``2w`` or seconds, parsed and spelled back."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator

from rotation.schema import short_repr

__all__ = ["MAX_DURATION", "Duration", "format_duration", "parse_duration"]

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
