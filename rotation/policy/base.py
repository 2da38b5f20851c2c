"""What every policy model shares: the strict, frozen base model and secret name/glob checks."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

from rotation.errors import InvalidSecretName
from rotation.names import MAX_NAME_LENGTH, validate_name
from rotation.policy.files import short_repr


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_GLOB_CHARS = "*?["
_PATTERN_CHARS = re.compile(r"[A-Za-z0-9_.\-/*?\[\]!^]+")


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in _GLOB_CHARS)


def _check_pattern(value: str, *, allow_glob: bool = True) -> str:
    if allow_glob and _is_glob(value):
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
