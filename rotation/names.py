"""Secret names: one set of rules every backend can honour without surprises."""

from __future__ import annotations

import fnmatch
import re

from rotation.errors import InvalidSecretName

__all__ = ["MAX_NAME_LENGTH", "matches_pattern", "validate_name", "validate_prefix"]

MAX_NAME_LENGTH = 200
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


def validate_name(name: object) -> str:
    """Return ``name`` if it is a valid secret name, else raise :class:`InvalidSecretName`.

    A name is 1-200 characters of path segments joined by ``/``; each segment starts with a
    letter, digit or ``_`` and holds only letters, digits, ``_``, ``.`` and ``-``. That refuses
    control characters, whitespace, ``..``, absolute paths and backend path tricks
    (``data/``, ``?version=``, ``%2e``) before any backend sees them.
    """
    if not isinstance(name, str):
        raise InvalidSecretName(
            f"Invalid secret name: expected a string, got {type(name).__name__}."
        )
    if not name:
        raise InvalidSecretName("Invalid secret name: it is empty.")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidSecretName(
            f"Invalid secret name: {len(name)} characters, the limit is {MAX_NAME_LENGTH}."
        )
    for segment in name.split("/"):
        if not _SEGMENT.fullmatch(segment):
            raise InvalidSecretName(
                f"Invalid secret name {_shown(name)}: each '/'-separated part must start with a "
                "letter, digit or '_' and contain only letters, digits, '_', '.' and '-'."
            )
    return name


def validate_prefix(prefix: object) -> str:
    """A list prefix: empty, or the start of a valid name (a trailing '/' is allowed)."""
    if prefix == "":
        return ""
    if not isinstance(prefix, str):
        raise InvalidSecretName(f"Invalid prefix: expected a string, got {type(prefix).__name__}.")
    validate_name(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def _shown(name: str) -> str:
    """The name as it may appear in a message: control characters escaped, length capped."""
    shown = name.encode("unicode_escape").decode("ascii")
    return repr(shown if len(shown) <= 80 else shown[:77] + "...")


def matches_pattern(name: str, pattern: str) -> bool:
    """``rotate_all``'s rule: a glob when ``pattern`` has ``*?[``, else a substring."""
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern in name
