"""The emulated vault's state and the REST semantics of the secrets API, without HTTP.

Each method returns the JSON body Key Vault would answer with, or raises :class:`ApiError`
with the status, code and message Key Vault uses. Times are Unix seconds, as on the wire.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ApiError", "Vault"]

Page = tuple[list[dict[str, Any]], int | None]

NAME = re.compile(r"[0-9a-zA-Z-]{1,127}")
VERSION = re.compile(r"[0-9a-f]{32}")
MAX_VALUE_CHARS = 25 * 1024
MAX_TAGS = 15
MAX_PAGE = 25
RECOVERY_LEVEL = "Recoverable+Purgeable"


class ApiError(Exception):
    """A Key Vault error answer: ``{"error": {"code", "message"[, "innererror"]}}``."""

    def __init__(self, status: int, code: str, message: str, inner: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.inner = status, code, message, inner

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.inner:
            error["innererror"] = {"code": self.inner}
        return {"error": error}


def _not_found(name: str, version: str = "") -> ApiError:
    shown = f"{name}/{version}" if version else name
    return ApiError(
        404,
        "SecretNotFound",
        f"A secret with (name/id) {shown} was not found in this key vault. If you recently "
        "deleted this secret you may be able to recover it using the correct recovery command.",
    )


def _deleted_not_found(name: str) -> ApiError:
    return ApiError(404, "SecretNotFound", f"Deleted Secret not found: {name}")


def _bad(message: str) -> ApiError:
    return ApiError(400, "BadParameter", message)


@dataclass
class Version:
    id: str
    value: str
    content_type: str | None
    tags: dict[str, str]
    enabled: bool
    created: int
    updated: int
    nbf: int | None = None
    exp: int | None = None


@dataclass
class Secret:
    name: str  # the spelling it was created with; lookups are case-insensitive
    versions: list[Version] = field(default_factory=list)
    deleted_date: int | None = None
    scheduled_purge_date: int | None = None
    #: While deletion "is in progress" (``delete_delay``), the secret is in neither collection.
    deleted_visible_at: float = 0.0

    @property
    def latest(self) -> Version:
        return self.versions[-1]


class Vault:
    """Secrets, versions and soft-deleted secrets of one vault, safe for concurrent requests."""

    def __init__(
        self,
        base_url: str,
        *,
        retention_days: int = 90,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retention_days = retention_days
        self.delete_delay = 0.0
        self._clock = clock
        self._lock = threading.Lock()
        self._live: dict[str, Secret] = {}
        self._deleted: dict[str, Secret] = {}

    # --- representations -------------------------------------------------------------------

    def _attributes(self, version: Version) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "enabled": version.enabled,
            "created": version.created,
            "updated": version.updated,
            "recoveryLevel": RECOVERY_LEVEL,
            "recoverableDays": self.retention_days,
        }
        if version.nbf is not None:
            attributes["nbf"] = version.nbf
        if version.exp is not None:
            attributes["exp"] = version.exp
        return attributes

    def _item(self, secret: Secret, version: Version, *, with_version: bool) -> dict[str, Any]:
        item_id = f"{self.base_url}/secrets/{secret.name}"
        item: dict[str, Any] = {
            "id": f"{item_id}/{version.id}" if with_version else item_id,
            "attributes": self._attributes(version),
        }
        if version.tags:
            item["tags"] = dict(version.tags)
        if version.content_type is not None:
            item["contentType"] = version.content_type
        return item

    def _bundle(self, secret: Secret, version: Version, *, with_value: bool) -> dict[str, Any]:
        bundle = self._item(secret, version, with_version=True)
        if with_value:
            bundle["value"] = version.value
        return bundle

    def _deleted_bundle(self, secret: Secret) -> dict[str, Any]:
        return {
            **self._bundle(secret, secret.latest, with_value=False),
            **self._deleted_fields(secret),
        }

    def _deleted_fields(self, secret: Secret) -> dict[str, Any]:
        return {
            "recoveryId": f"{self.base_url}/deletedsecrets/{secret.name}",
            "deletedDate": secret.deleted_date,
            "scheduledPurgeDate": secret.scheduled_purge_date,
        }

    @staticmethod
    def _page(
        items: list[dict[str, Any]], skip: int, maxresults: int | None
    ) -> tuple[list[dict[str, Any]], int | None]:
        size = maxresults or MAX_PAGE
        if not 1 <= size <= MAX_PAGE:
            raise _bad(f"maxresults must be between 1 and {MAX_PAGE}.")
        end = skip + size
        return items[skip:end], (end if end < len(items) else None)

    # --- state helpers (call with the lock held) ---------------------------------------------

    def _settle(self) -> None:
        """Finish deletions whose delay has passed; purge what passed its purge date."""
        now = self._clock()
        for key, secret in list(self._deleted.items()):
            if secret.scheduled_purge_date is not None and secret.scheduled_purge_date <= now:
                del self._deleted[key]

    def _deleting(self, key: str) -> bool:
        secret = self._deleted.get(key)
        return secret is not None and secret.deleted_visible_at > self._clock()

    def _live_secret(self, name: str) -> Secret:
        secret = self._live.get(name.lower())
        if secret is None:
            raise _not_found(name)
        return secret

    def _version(self, name: str, version_id: str) -> tuple[Secret, Version]:
        secret = self._live_secret(name)
        if not version_id:
            return secret, secret.latest
        for version in secret.versions:
            if version.id == version_id:
                return secret, version
        raise _not_found(name, version_id)

    @staticmethod
    def _check_name(name: str) -> None:
        if not NAME.fullmatch(name):
            raise _bad(
                f"The request URI contains an invalid name: {name}. Secret names may only "
                "contain alphanumeric characters and dashes, 1-127 characters."
            )

    @staticmethod
    def _check_common(body: dict[str, Any]) -> None:
        tags = body.get("tags")
        if tags is not None:
            if not isinstance(tags, dict) or len(tags) > MAX_TAGS:
                raise _bad(f"Tags must be an object with at most {MAX_TAGS} entries.")
            for key, value in tags.items():
                if not isinstance(value, str) or len(key) > 512 or len(value) > 256:
                    raise _bad("Tag names are at most 512 characters, tag values 256.")
        content_type = body.get("contentType")
        if content_type is not None and (
            not isinstance(content_type, str) or len(content_type) > 255
        ):
            raise _bad("contentType must be a string of at most 255 characters.")
        attributes = body.get("attributes")
        if attributes is not None and not isinstance(attributes, dict):
            raise _bad("attributes must be an object.")

    # --- operations --------------------------------------------------------------------------

    def set_secret(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """``PUT /secrets/{name}``: a new secret, or a new version of an existing one."""
        self._check_name(name)
        value = body.get("value")
        if not isinstance(value, str):
            raise _bad("The parameter 'value' is required and must be a string.")
        if len(value) > MAX_VALUE_CHARS:
            raise _bad(f"The secret value is too large: at most {MAX_VALUE_CHARS} characters.")
        self._check_common(body)
        attributes = body.get("attributes") or {}
        with self._lock:
            self._settle()
            key = name.lower()
            if key in self._deleted:
                if self._deleting(key):
                    raise ApiError(409, "Conflict", f"Secret {name} is currently being deleted.")
                raise ApiError(
                    409,
                    "Conflict",
                    f"Secret {name} is currently in a deleted but recoverable state, and its name "
                    "cannot be reused; in this state, the secret can only be recovered or purged.",
                )
            secret = self._live.setdefault(key, Secret(name=name))
            now = int(self._clock())
            version = Version(
                id=uuid.uuid4().hex,
                value=value,
                content_type=body.get("contentType"),
                tags=dict(body.get("tags") or {}),
                enabled=bool(attributes.get("enabled", True)),
                created=now,
                updated=now,
                nbf=attributes.get("nbf"),
                exp=attributes.get("exp"),
            )
            secret.versions.append(version)
            return self._bundle(secret, version, with_value=True)

    def get_secret(self, name: str, version_id: str) -> dict[str, Any]:
        """``GET /secrets/{name}/{version}``; an empty version means the latest."""
        self._check_name(name)
        with self._lock:
            self._settle()
            secret, version = self._version(name, version_id)
            if not version.enabled:
                raise ApiError(
                    403,
                    "Forbidden",
                    "Operation get is not allowed on a disabled secret.",
                    inner="SecretDisabled",
                )
            return self._bundle(secret, version, with_value=True)

    def update_secret(self, name: str, version_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """``PATCH /secrets/{name}/{version}``: attributes, tags, contentType; never the value."""
        self._check_name(name)
        self._check_common(body)
        with self._lock:
            self._settle()
            secret, version = self._version(name, version_id)
            attributes = body.get("attributes") or {}
            if "enabled" in attributes and attributes["enabled"] is not None:
                version.enabled = bool(attributes["enabled"])
            for wire, attr in (("nbf", "nbf"), ("exp", "exp")):
                if wire in attributes:
                    setattr(version, attr, attributes[wire])
            if body.get("tags") is not None:
                version.tags = dict(body["tags"])
            if body.get("contentType") is not None:
                version.content_type = body["contentType"]
            version.updated = int(self._clock())
            return self._bundle(secret, version, with_value=False)

    def list_secrets(self, skip: int, maxresults: int | None) -> Page:
        """``GET /secrets``: one item per live secret (its latest version's attributes)."""
        with self._lock:
            self._settle()
            secrets = sorted(self._live.values(), key=lambda s: s.name.lower())
            items = [self._item(s, s.latest, with_version=False) for s in secrets]
        return self._page(items, skip, maxresults)

    def list_versions(self, name: str, skip: int, maxresults: int | None) -> Page:
        """``GET /secrets/{name}/versions``: every version, without values."""
        self._check_name(name)
        with self._lock:
            self._settle()
            secret = self._live_secret(name)
            items = [self._item(secret, v, with_version=True) for v in secret.versions]
        return self._page(items, skip, maxresults)

    def delete_secret(self, name: str) -> dict[str, Any]:
        """``DELETE /secrets/{name}``: soft delete; the name stays reserved until purged."""
        self._check_name(name)
        with self._lock:
            self._settle()
            key = name.lower()
            secret = self._live_secret(name)
            del self._live[key]
            now = self._clock()
            secret.deleted_date = int(now)
            secret.scheduled_purge_date = int(now) + self.retention_days * 86400
            secret.deleted_visible_at = now + self.delete_delay
            self._deleted[key] = secret
            return self._deleted_bundle(secret)

    def _deleted_secret(self, name: str) -> Secret:
        key = name.lower()
        secret = self._deleted.get(key)
        if secret is None or self._deleting(key):
            raise _deleted_not_found(name)
        return secret

    def get_deleted(self, name: str) -> dict[str, Any]:
        """``GET /deletedsecrets/{name}``: 404 until deletion has completed."""
        self._check_name(name)
        with self._lock:
            self._settle()
            secret = self._deleted_secret(name)
            return self._deleted_bundle(secret)

    def list_deleted(self, skip: int, maxresults: int | None) -> Page:
        """``GET /deletedsecrets``."""
        with self._lock:
            self._settle()
            keys = sorted(k for k in self._deleted if not self._deleting(k))
            items = [
                {**self._item(s, s.latest, with_version=False), **self._deleted_fields(s)}
                for s in (self._deleted[k] for k in keys)
            ]
        return self._page(items, skip, maxresults)

    def recover(self, name: str) -> dict[str, Any]:
        """``POST /deletedsecrets/{name}/recover``: every version comes back."""
        self._check_name(name)
        with self._lock:
            self._settle()
            secret = self._deleted_secret(name)
            key = name.lower()
            del self._deleted[key]
            secret.deleted_date = secret.scheduled_purge_date = None
            self._live[key] = secret
            return self._bundle(secret, secret.latest, with_value=False)

    def purge(self, name: str) -> None:
        """``DELETE /deletedsecrets/{name}``: gone for good; the name is free again."""
        self._check_name(name)
        with self._lock:
            self._settle()
            key = name.lower()
            if self._deleting(key):
                raise ApiError(409, "Conflict", f"Secret {name} is currently being deleted.")
            self._deleted_secret(name)
            del self._deleted[key]

    def secret_count(self) -> tuple[int, int]:
        """(live, deleted) secrets, for tests."""
        with self._lock:
            return len(self._live), len(self._deleted)
