"""When to try a failed step again: a small strategy object with one decision method."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from rotation.errors import KeyturnError

__all__ = ["ExponentialBackoff", "is_retryable"]


@dataclass(frozen=True)
class ExponentialBackoff:
    """``base * 2**(attempt-1)``, capped, with full jitter in the upper half (never zero)."""

    base: timedelta = timedelta(seconds=2)
    cap: timedelta = timedelta(minutes=10)

    def delay(self, attempt: int) -> timedelta:
        """The wait before try ``attempt + 1`` after ``attempt`` failed tries (attempt >= 1)."""
        ceiling = min(self.cap.total_seconds(), self.base.total_seconds() * 2 ** (attempt - 1))
        return timedelta(seconds=random.uniform(ceiling / 2, ceiling))


def is_retryable(exc: BaseException) -> bool:
    """Whether trying again can help: a Keyturn error says so itself (``retryable``).

    Anything else escaped a boundary untranslated: bad data (a NUL in a role name, a malformed
    value) cannot get better; other errors (network, driver) usually pass. Attempts stay
    bounded either way."""
    if isinstance(exc, KeyturnError):
        return exc.retryable
    return not isinstance(exc, ValueError | TypeError | LookupError)
