"""The building blocks of every declarative schema (policies, restart strategies, rotator
targets): a strict frozen model, secret name and glob checks, short values in messages.

Plug-ins (a rotator kind's ``Target``, a restart strategy) build on these, so a third-party
schema reports errors as the built-in ones do (``keyturn policies check``: file, line, field).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

from rotation.errors import InvalidSecretName
from rotation.names import MAX_NAME_LENGTH, validate_name

__all__ = ["Spec", "check_pattern", "check_secret_name", "is_glob", "short_repr"]


class Spec(BaseModel):
    """A strict, frozen schema: unknown fields are errors, values never change once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_GLOB_CHARS = "*?["
_PATTERN_CHARS = re.compile(r"[A-Za-z0-9_.\-/*?\[\]!^]+")


def short_repr(value: object) -> str:
    """``repr(value)`` capped at 60 characters, for messages."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        return f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


def is_glob(pattern: str) -> bool:
    """True if ``pattern`` has fnmatch wildcards (``*``, ``?``, ``[...]``)."""
    return any(c in pattern for c in _GLOB_CHARS)


def check_secret_name(value: str) -> str:
    """``value`` if it is a valid secret name; a ``ValueError`` (a schema error) if not."""
    try:
        return validate_name(value)
    except InvalidSecretName as exc:
        raise ValueError(exc.message) from None


def check_pattern(value: str) -> str:
    """``value`` if it is a valid secret name or glob; a ``ValueError`` if not."""
    if is_glob(value):
        if len(value) > MAX_NAME_LENGTH or not _PATTERN_CHARS.fullmatch(value):
            raise ValueError(
                f"invalid glob {short_repr(value)}: use name characters and * ? [...], "
                "e.g. 'api_key_*'"
            )
        return value
    return check_secret_name(value)
