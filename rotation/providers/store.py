"""A versioned secret store as plain data: the stage rules the memory and local providers share.

The state is a JSON-compatible ``dict`` so the local provider can encrypt and persist it as is.
Nothing here locks: callers serialize access.
"""

from __future__ import annotations

import builtins
import uuid
from datetime import UTC, datetime
from typing import Any

from rotation.errors import SecretNotFound, VersionConflict
from rotation.values import (
    SecretValue,
    SecretVersion,
    Stage,
    VersionInfo,
    decode_value,
    encode_value,
)

__all__ = ["DEFAULT_MAX_VERSIONS", "VersionedStore"]

DEFAULT_MAX_VERSIONS = 10
_STAGE_KEYS = {Stage.CURRENT: "current", Stage.PENDING: "pending", Stage.PREVIOUS: "previous"}


class VersionedStore:
    """Secrets with versions, stages and rotation tokens, over a JSON-compatible dict."""

    def __init__(
        self, state: dict[str, Any] | None = None, max_versions: int = DEFAULT_MAX_VERSIONS
    ):
        self.state: dict[str, Any] = state if state is not None else {"secrets": {}}
        self.max_versions = max_versions

    @property
    def _secrets(self) -> dict[str, Any]:
        secrets: dict[str, Any] = self.state["secrets"]
        return secrets

    def _record(self, name: str) -> dict[str, Any]:
        record: dict[str, Any] | None = self._secrets.get(name)
        if record is None:
            raise SecretNotFound(name)
        return record

    @staticmethod
    def _version(record: dict[str, Any], version_id: str) -> dict[str, Any]:
        versions: list[dict[str, Any]] = record["versions"]
        for version in versions:
            if version["id"] == version_id:
                return version
        raise KeyError(version_id)

    @staticmethod
    def _by_token(record: dict[str, Any], token: str) -> dict[str, Any] | None:
        versions: list[dict[str, Any]] = record["versions"]
        for version in versions:
            if version.get("token") == token:
                return version
        return None

    def _as_secret(self, name: str, version: dict[str, Any]) -> SecretVersion:
        return SecretVersion(
            name=name,
            value=decode_value(version["value"], version["json"]),
            version_id=version["id"],
            token=version.get("token"),
        )

    def _append(self, record: dict[str, Any], value: SecretValue, token: str | None) -> str:
        version_id = token or uuid.uuid4().hex
        record["versions"].append(
            {
                "id": version_id,
                "token": token,
                "created": datetime.now(UTC).isoformat(),
                "value": encode_value(value),
                "json": not isinstance(value, str),
            }
        )
        return version_id

    def _prune(self, record: dict[str, Any]) -> None:
        keep = {record.get(k) for k in _STAGE_KEYS.values()} - {None}
        excess = len(record["versions"]) - self.max_versions
        if excess <= 0:
            return
        survivors = []
        for version in record["versions"]:
            if excess > 0 and version["id"] not in keep:
                excess -= 1
                continue
            survivors.append(version)
        record["versions"] = survivors

    # --- operations, mirroring rotation.providers.base.Provider ---------------------------

    def read(self, name: str, stage: Stage = Stage.CURRENT) -> SecretVersion:
        record = self._record(name)
        version_id = record.get(_STAGE_KEYS[stage])
        if version_id is None:
            raise SecretNotFound(name, f"no {stage.value} version")
        return self._as_secret(name, self._version(record, version_id))

    def write(self, name: str, value: SecretValue, expected_version: str | None = None) -> str:
        record = self._secrets.get(name)
        if expected_version is not None:
            current = record["current"] if record else None
            if current != expected_version:
                raise VersionConflict(
                    f"Version conflict on {name!r}: expected version {expected_version}, "
                    f"current is {current}; read it again and retry."
                )
        if record is None:
            record = {"versions": [], "current": None, "previous": None, "pending": None}
            self._secrets[name] = record
        version_id = self._append(record, value, None)
        record["previous"], record["current"] = record["current"], version_id
        self._prune(record)
        return version_id

    def stage_pending(self, name: str, value: SecretValue, token: str) -> str:
        record = self._record(name)
        existing = self._by_token(record, token)
        if existing is not None:
            if existing["value"] != encode_value(value):
                raise VersionConflict(
                    f"Version conflict on {name!r}: token {token} was already used with "
                    "another value."
                )
            return str(existing["id"])
        record["pending"] = self._append(record, value, token)
        self._prune(record)
        return str(record["pending"])

    def promote(self, name: str, token: str) -> str:
        record = self._record(name)
        version = self._by_token(record, token)
        if version is None:
            raise SecretNotFound(name, f"no version staged under token {token}")
        if record["current"] == version["id"]:
            return str(version["id"])
        if record["pending"] != version["id"]:
            raise VersionConflict(
                f"Version conflict on {name!r}: token {token} is neither pending nor current."
            )
        record["previous"], record["current"] = record["current"], version["id"]
        record["pending"] = None
        return str(version["id"])

    def discard_pending(self, name: str, token: str) -> None:
        record = self._secrets.get(name)
        if record is None:
            return
        version = self._by_token(record, token)
        if version is None or record["pending"] != version["id"]:
            return
        record["pending"] = None
        record["versions"].remove(version)

    def rollback(self, name: str, token: str) -> str:
        record = self._record(name)
        version = self._by_token(record, token)
        if version is None or record["current"] != version["id"]:
            return str(record["current"])
        if record["previous"] is None:
            raise SecretNotFound(name, "no previous version to roll back to")
        record["current"], record["previous"] = record["previous"], record["current"]
        return str(record["current"])

    def list(self, prefix: str = "") -> list[str]:
        return sorted(n for n in self._secrets if n.startswith(prefix))

    def delete(self, name: str) -> None:
        self._record(name)
        del self._secrets[name]

    def versions(self, name: str) -> builtins.list[VersionInfo]:
        record = self._record(name)
        labels: dict[str, set[Stage]] = {}
        for stage, key in _STAGE_KEYS.items():
            if record.get(key):
                labels.setdefault(record[key], set()).add(stage)
        return [
            VersionInfo(
                version_id=v["id"],
                created=datetime.fromisoformat(v["created"]),
                stages=frozenset(labels.get(v["id"], ())),
                token=v.get("token"),
            )
            for v in record["versions"]
        ]
