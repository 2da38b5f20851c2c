"""When to try a failed step again: a small strategy object with one decision method."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

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
    """Whether trying again can help: an explicit ``retryable`` wins, then the error kind."""
    from rotation.errors import (
        BackendUnavailable,
        ConfigurationError,
        InvalidSecretName,
        InvalidSecretValue,
        SecretNotFound,
        UnsupportedOperation,
        VersionConflict,
    )

    explicit = getattr(exc, "retryable", None)
    if isinstance(explicit, bool):
        return explicit
    if isinstance(exc, BackendUnavailable | VersionConflict):
        return True
    permanent = (
        ConfigurationError,
        InvalidSecretName,
        InvalidSecretValue,
        SecretNotFound,
        UnsupportedOperation,
    )
    if isinstance(exc, permanent):
        return False
    if isinstance(exc, ValueError | TypeError | LookupError):
        return False  # bad data (a NUL in a role name, a malformed value): retrying cannot help
    # other backend errors (auth, permission) may be fixed by an operator meanwhile; unknown
    # exceptions (network, driver) are usually transient. Attempts stay bounded either way.
    return True
