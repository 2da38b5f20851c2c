"""The provider boundary: what every secrets backend does, in one small Protocol.

Versions and stages are first-class because the rotation engine writes a *pending* value,
promotes it, and can roll a promotion back. Rotation calls are keyed by a caller-chosen
``token`` (AWS's ``ClientRequestToken``): repeating a call with the same token is a no-op,
which is what makes every rotation step idempotent.

Stage rules every provider keeps:

- plain readers (``read(name)``, the backend's own CLI) only ever see CURRENT;
- at most one version is PENDING, one CURRENT, one PREVIOUS;
- ``promote`` makes the pending version CURRENT and the former current PREVIOUS;
- ``rollback`` makes PREVIOUS current again, only while the given token is current.
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from rotation.values import SecretValue, SecretVersion, Stage, VersionInfo

__all__ = ["LIST", "READ", "WRITE_PENDING", "AccessCheck", "Capability", "ChecksAccess", "Provider"]

#: The permissions a rotation needs on its backend (``keyturn doctor`` checks them).
READ = "read"
WRITE_PENDING = "write a pending version"
LIST = "list"


class Capability(enum.StrEnum):
    """Optional things a backend can do; declared, never probed."""

    #: ``restore(name)`` undoes a delete within the recovery window.
    RESTORE = "restore"
    #: ``purge(name)`` removes a deleted secret for good.
    PURGE = "purge"
    #: ``write(..., expected_version=...)`` is enforced by the backend (check-and-set).
    CHECK_AND_SET = "check_and_set"


@runtime_checkable
class Provider(Protocol):
    """A secrets backend. Every method is mandatory; unsupported ones raise
    :class:`~rotation.errors.UnsupportedOperation`."""

    #: The registry alias this provider answers to (``"vault"``, ``"local"``...).
    name: str
    capabilities: frozenset[Capability]

    def read(self, name: str, *, stage: Stage = Stage.CURRENT) -> SecretVersion:
        """The value at ``stage``; :class:`SecretNotFound` if the secret or stage is absent."""
        ...

    def write(self, name: str, value: SecretValue, *, expected_version: str | None = None) -> str:
        """Store ``value`` as the new CURRENT version (the old one becomes PREVIOUS).

        With ``expected_version``, fail with :class:`VersionConflict` unless that version is
        still current. Returns the new version id."""
        ...

    def stage_pending(self, name: str, value: SecretValue, *, token: str) -> str:
        """Store ``value`` as PENDING under ``token``; plain readers keep seeing CURRENT.

        Idempotent: the same token and value again returns the same version id; the same token
        with another value raises :class:`VersionConflict`. A pending version under another
        token is replaced. The secret must exist."""
        ...

    def promote(self, name: str, *, token: str) -> str:
        """Make the PENDING version under ``token`` CURRENT; the old current becomes PREVIOUS.

        Idempotent: if ``token`` is already current, nothing changes. Returns the version id
        now current."""
        ...

    def discard_pending(self, name: str, *, token: str) -> None:
        """Forget the PENDING version under ``token``, if it is still pending."""
        ...

    def rollback(self, name: str, *, token: str) -> str:
        """Undo the promotion of ``token``: PREVIOUS becomes CURRENT again.

        A no-op when ``token`` is not current (already rolled back). Returns the id now current."""
        ...

    def list(self, prefix: str = "") -> list[str]:
        """Names of existing secrets starting with ``prefix``, sorted."""
        ...

    def delete(self, name: str, *, force: bool = False) -> None:
        """Delete the secret (all versions); ``force`` skips any recovery window."""
        ...

    def versions(self, name: str) -> builtins.list[VersionInfo]:
        """Every retained version, oldest first, without values."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


@dataclass(frozen=True)
class AccessCheck:
    """One permission a rotation needs, as checked without changing anything in the backend."""

    permission: str
    #: True: allowed; False: denied; None: the backend cannot tell without a write.
    allowed: bool | None
    #: One line: how it was checked, or what is missing and where. Never a value.
    detail: str


@runtime_checkable
class ChecksAccess(Protocol):
    """A provider that can tell, without writing, whether it may rotate ``names``."""

    def check_access(self, names: Sequence[str]) -> builtins.list[AccessCheck]:
        """:data:`READ`, :data:`WRITE_PENDING` and :data:`LIST` for ``names``; changes nothing."""
        ...
