"""Keyturn secret names <-> Azure Key Vault secret names, reversibly.

Key Vault names allow only ``[0-9a-zA-Z-]``, 1-127 characters, and compare case-insensitively;
Keyturn names (:mod:`rotation.names`) also use ``_``, ``.``, ``/`` and mean ``A`` and ``a``
as different names. The mapping escapes with ``-`` and writes only lowercase:

=========================  ========================
Keyturn character          Key Vault text
=========================  ========================
``a``-``z``, ``0``-``9``   itself
``-``                      ``-0``
``_``                      ``-1``
``.``                      ``-2``
``/``                      ``-3``
``A``-``Z``                ``-`` + the lowercase letter (``B`` -> ``-b``)
=========================  ========================

So ``app/DB_password`` becomes ``app-3-d-b-1password``. The code is prefix-free and
character by character, hence injective: two different names never share a Key Vault
name, not even case-insensitively, because the output never contains an uppercase letter.

Everything the mapping produces is a run of ``[a-z0-9]`` or ``-`` followed by one of
``0123`` or a letter. ``-9`` is never produced, so Keyturn's internal sibling secrets
(``<mapped>-9p`` holds a pending value) can never be mistaken for a user's secret.

An optional account prefix (``AZURE_SECRETS_PREFIX``) is prepended in Key Vault space,
after the mapping. The mapped name plus the longest internal suffix must fit in 127
characters; a longer name raises :class:`~rotation.errors.InvalidSecretName`.
"""

from __future__ import annotations

import re

from rotation.errors import ConfigurationError, InvalidSecretName, KeyturnError
from rotation.names import validate_name

__all__ = ["MAX_AZURE_NAME_LENGTH", "PENDING_SUFFIX", "NameMapper", "decode", "encode"]

#: Key Vault's limit on secret names.
MAX_AZURE_NAME_LENGTH = 127
#: Appended to a mapped name to form the sibling secret that holds a pending value.
PENDING_SUFFIX = "-9p"

_ESCAPES = {"-": "0", "_": "1", ".": "2", "/": "3"}
_UNESCAPES = {code: char for char, code in _ESCAPES.items()}
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_PREFIX = re.compile(r"[0-9A-Za-z-]{0,64}")


def encode(name: str) -> str:
    """The Key Vault spelling of a valid Keyturn name (without any account prefix)."""
    out: list[str] = []
    for char in name:
        if char in _PLAIN:
            out.append(char)
        elif char in _ESCAPES:
            out.append("-" + _ESCAPES[char])
        elif "A" <= char <= "Z":
            out.append("-" + char.lower())
        else:  # validate_name refuses these before we get here
            raise InvalidSecretName(f"Invalid secret name: {char!r} cannot be stored in Key Vault.")
    return "".join(out)


def decode(mapped: str) -> str | None:
    """The Keyturn name spelled ``mapped``, or ``None`` if ``mapped`` is not one.

    Key Vault compares names case-insensitively, so ``mapped`` is lowercased first.
    """
    text = mapped.lower()
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char in _PLAIN:
            out.append(char)
            i += 1
            continue
        if char != "-" or i + 1 >= len(text):
            return None
        code = text[i + 1]
        if code in _UNESCAPES:
            out.append(_UNESCAPES[code])
        elif "a" <= code <= "z":
            out.append(code.upper())
        else:
            return None
        i += 2
    name = "".join(out)
    try:
        validate_name(name)
    except KeyturnError:
        return None
    return name


class NameMapper:
    """Maps names for one provider: the account prefix, the pending sibling, the length limit."""

    def __init__(self, prefix: str = "") -> None:
        if not _PREFIX.fullmatch(prefix):
            raise ConfigurationError(
                f"AZURE_SECRETS_PREFIX must be at most 64 characters of letters, digits and '-' "
                f"(Key Vault's alphabet), not {prefix!r}."
            )
        self.prefix = prefix.lower()
        self.max_mapped = MAX_AZURE_NAME_LENGTH - len(PENDING_SUFFIX) - len(self.prefix)

    def to_azure(self, name: str) -> str:
        """The Key Vault name of the secret ``name`` (validated)."""
        validate_name(name)
        mapped = encode(name)
        if len(mapped) > self.max_mapped:
            raise InvalidSecretName(
                f"Invalid secret name {name!r} for Azure Key Vault: it maps to {len(mapped)} "
                f"characters and at most {self.max_mapped} fit (Key Vault allows 127, minus the "
                f"prefix {self.prefix!r} and {len(PENDING_SUFFIX)} for the pending sibling; "
                "every '-', '_', '.', '/' and uppercase letter takes 2). Use a shorter name."
            )
        return self.prefix + mapped

    def pending_of(self, name: str) -> str:
        """The Key Vault name of the sibling secret that holds ``name``'s pending value."""
        return self.to_azure(name) + PENDING_SUFFIX

    def from_azure(self, azure_name: str) -> str | None:
        """The Keyturn name behind a Key Vault name, or ``None`` (foreign or internal)."""
        lowered = azure_name.lower()
        if not lowered.startswith(self.prefix):
            return None
        return decode(lowered[len(self.prefix) :])
