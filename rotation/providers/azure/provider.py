"""Azure Key Vault, through azure-keyvault-secrets and azure-identity.

Configuration (``from_env``): ``AZURE_KEY_VAULT_URL`` (required, https); credentials from
``AZURE_TENANT_ID`` + ``AZURE_CLIENT_ID`` + ``AZURE_CLIENT_SECRET`` (a service principal), else
``DefaultAzureCredential`` (managed identity, workload identity, Azure CLI...);
``AZURE_SECRETS_PREFIX``; ``AZURE_CA_BUNDLE`` / ``REQUESTS_CA_BUNDLE``;
``AZURE_KEY_VAULT_VERIFY_CHALLENGE_RESOURCE``; ``AZURE_KEY_VAULT_RETRY_TOTAL``,
``AZURE_KEY_VAULT_TIMEOUT``; ``AZURE_KEY_VAULT_TOKEN`` (a static bearer token, for emulators
and tests only). docs/backends/azure.md has the details.

Layout in the vault, for a Keyturn secret ``name`` (mapped as :mod:`rotation.providers.azure.names`
describes, with the account prefix):

- ``<mapped>`` holds CURRENT: its latest version, which is what ``az keyvault secret show``
  and a plain ``SecretClient.get_secret`` return. Every version Keyturn writes carries the tag
  ``keyturn-previous=<version id that was current>``; PREVIOUS is the version the current one
  names there (or, for versions written by other tools, the newest older enabled version).
  A promotion's version is tagged ``keyturn-token=<token>``; a rollback's ``keyturn-rollback-of``.
- ``<mapped>-9p`` (a name the mapping never produces) holds PENDING: a version tagged
  ``keyturn-stage=pending`` and ``keyturn-token``. Promotion copies it into ``<mapped>`` and
  then disables it (``keyturn-stage=consumed``); discarding disables it (``discarded``). A
  disabled sibling version can no longer be read, even by the SDK.

Key Vault has no check-and-set: ``expected_version`` is checked just before writing, which
narrows but does not close the race (``Capability.CHECK_AND_SET`` is not declared).
"""

from __future__ import annotations

import builtins
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, TypeVar

from azure.core.credentials import TokenCredential
from azure.keyvault.secrets import KeyVaultSecret, SecretClient, SecretProperties

from rotation.errors import (
    BackendUnavailable,
    InvalidSecretValue,
    KeyturnError,
    SecretDisabled,
    SecretNotFound,
    VersionConflict,
)
from rotation.names import validate_prefix
from rotation.providers.azure.config import (
    StaticTokenCredential,
    _check_url,
    _close_credential,
    _credential_from_env,
    client_options,
    settings_from_env,
    verifies_challenge_by_default,
)
from rotation.providers.azure.errors import translated
from rotation.providers.azure.names import NameMapper
from rotation.providers.base import AccessCheck, Capability
from rotation.values import (
    SecretValue,
    SecretVersion,
    Stage,
    VersionInfo,
    encode_value,
    freeze_value,
)

__all__ = ["AzureKeyVaultProvider", "StaticTokenCredential"]

log = logging.getLogger("keyturn.providers.azure")

T = TypeVar("T")

TAG_STAGE = "keyturn-stage"
TAG_TOKEN = "keyturn-token"
TAG_PREVIOUS = "keyturn-previous"
TAG_ORIGIN = "keyturn-origin"
TAG_ROLLBACK_OF = "keyturn-rollback-of"
JSON_CONTENT_TYPE = "application/json"
TEXT_CONTENT_TYPE = "text/plain"
#: Key Vault refuses larger values.
MAX_VALUE_BYTES = 25 * 1024
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


class AzureKeyVaultProvider:
    """Secrets in an Azure Key Vault; pending values in a sibling secret, never in the main one."""

    name = "azure"
    capabilities = frozenset({Capability.RESTORE, Capability.PURGE})

    def __init__(
        self,
        vault_url: str,
        *,
        credential: TokenCredential | None = None,
        prefix: str = "",
        verify_challenge_resource: bool | None = None,
        ca_bundle: str | None = None,
        retry_total: int = 5,
        retry_backoff_factor: float = 0.4,
        retry_backoff_max: float = 3.0,
        connection_timeout: float = 5.0,
        read_timeout: float = 15.0,
        operation_timeout: float = 60.0,
        lro_timeout: float = 120.0,
    ) -> None:
        self.vault_url = _check_url(vault_url)
        self.names = NameMapper(prefix)
        if verify_challenge_resource is None:
            verify_challenge_resource = verifies_challenge_by_default(self.vault_url)
        self.verify_challenge_resource = verify_challenge_resource
        options = client_options(
            verify_challenge_resource=verify_challenge_resource,
            ca_bundle=ca_bundle,
            retry_total=retry_total,
            retry_backoff_factor=retry_backoff_factor,
            retry_backoff_max=retry_backoff_max,
            connection_timeout=connection_timeout,
            read_timeout=read_timeout,
            operation_timeout=operation_timeout,
        )
        self._owns_credential = credential is None
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        self._credential = credential
        self._lro_timeout = lro_timeout
        self._retry_total = retry_total
        self._client = SecretClient(self.vault_url, credential, **options)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> AzureKeyVaultProvider:
        """Built from ``AZURE_*`` variables (see the module docstring)."""
        settings = settings_from_env(environ)  # checks the URL before building a credential
        credential = _credential_from_env(environ)
        try:
            provider = cls(credential=credential, **settings)
        except BaseException:
            _close_credential(credential)
            raise
        provider._owns_credential = True
        return provider

    # --- error translation ---------------------------------------------------------------------

    def _errors(self, name: str) -> AbstractContextManager[None]:
        """Translate azure-core errors for an operation on ``name`` (see :mod:`.azure_errors`)."""
        return translated(name, vault_url=self.vault_url, retries=self._retry_total)

    def _call(self, name: str, fn: Callable[[], T]) -> T:
        with self._errors(name):
            return fn()

    # --- low-level helpers -----------------------------------------------------------------

    def _get(self, name: str, azure_name: str, version: str | None = None) -> KeyVaultSecret:
        """``GET /secrets/{azure_name}/{version}``."""
        return self._call(name, lambda: self._client.get_secret(azure_name, version))

    def _find(self, name: str, azure_name: str) -> KeyVaultSecret | None:
        """The latest version, or ``None`` if the secret does not exist (disabled: raises)."""
        try:
            return self._get(name, azure_name)
        except SecretNotFound:
            return None

    def _set(
        self, name: str, azure_name: str, value: SecretValue, tags: dict[str, str]
    ) -> KeyVaultSecret:
        """``PUT /secrets/{azure_name}``: a new version."""
        text = encode_value(value)
        if len(text.encode()) > MAX_VALUE_BYTES:
            raise InvalidSecretValue(
                f"The value for {name!r} is {len(text.encode())} bytes; Azure Key Vault stores "
                f"at most {MAX_VALUE_BYTES}."
            )
        content_type = TEXT_CONTENT_TYPE if isinstance(value, str) else JSON_CONTENT_TYPE
        return self._call(
            name,
            lambda: self._client.set_secret(azure_name, text, content_type=content_type, tags=tags),
        )

    def _versions_of(self, name: str, azure_name: str) -> list[SecretProperties]:
        """``GET /secrets/{azure_name}/versions`` (every page), oldest first."""
        items = self._call(
            name, lambda: list(self._client.list_properties_of_secret_versions(azure_name))
        )
        return _oldest_first(items)

    def _pending(self, name: str) -> KeyVaultSecret | None:
        """The sibling's latest version if it is a live pending value."""
        try:
            secret = self._get(name, self.names.pending_of(name))
        except (SecretNotFound, SecretDisabled):  # absent, or consumed/discarded (disabled)
            return None
        tags = secret.properties.tags or {}
        return secret if tags.get(TAG_STAGE) == "pending" else None

    def _retire_pending(self, name: str, pending: KeyVaultSecret, stage: str) -> None:
        """``PATCH /secrets/{sibling}/{version}``: disable it and record why."""
        tags = {**(pending.properties.tags or {}), TAG_STAGE: stage}
        sibling = self.names.pending_of(name)
        version = pending.properties.version
        self._call(
            name,
            lambda: self._client.update_secret_properties(
                sibling, version, enabled=False, tags=tags
            ),
        )

    def _previous_id(self, name: str, azure_name: str, current: SecretProperties) -> str | None:
        tagged = (current.tags or {}).get(TAG_PREVIOUS)
        if tagged:
            return tagged
        older = [
            v
            for v in self._versions_of(name, azure_name)
            if v.enabled
            and v.version != current.version
            and (v.created_on or _EARLIEST) <= (current.created_on or _LATEST)
        ]
        return older[-1].version if older else None

    def _as_version(self, name: str, secret: KeyVaultSecret) -> SecretVersion:
        return SecretVersion(
            name=name,
            value=_decode(secret),
            version_id=str(secret.properties.version),
            token=_token_of(secret.properties),
        )

    # --- Provider ---------------------------------------------------------------------------

    def read(self, name: str, *, stage: Stage = Stage.CURRENT) -> SecretVersion:
        """``GET /secrets/{name}/`` (CURRENT), the sibling (PENDING) or the tagged previous."""
        azure_name = self.names.to_azure(name)
        if stage is Stage.PENDING:
            pending = self._pending(name)
            if pending is None:
                raise SecretNotFound(name, "no pending version")
            return self._as_version(name, pending)
        current = self._get(name, azure_name)
        if stage is Stage.CURRENT:
            return self._as_version(name, current)
        previous_id = self._previous_id(name, azure_name, current.properties)
        if previous_id is None:
            raise SecretNotFound(name, "no previous version")
        return self._as_version(name, self._get(name, azure_name, previous_id))

    def write(self, name: str, value: SecretValue, *, expected_version: str | None = None) -> str:
        """``PUT /secrets/{name}`` with ``keyturn-previous`` naming the version it replaces."""
        azure_name = self.names.to_azure(name)
        frozen = freeze_value(value)
        current_id = self._current_id(name, azure_name)
        if expected_version is not None and current_id != expected_version:
            raise VersionConflict(
                f"Version conflict on {name!r}: expected version {expected_version}, "
                f"current is {current_id}; read it again and retry."
            )
        tags = {TAG_ORIGIN: "write"}
        if current_id:
            tags[TAG_PREVIOUS] = current_id
        created = self._set(name, azure_name, frozen, tags)
        return str(created.properties.version)

    def _current_id(self, name: str, azure_name: str) -> str | None:
        try:
            current = self._find(name, azure_name)
        except SecretDisabled:  # the latest version is disabled: still the one replaced
            versions = self._versions_of(name, azure_name)
            return versions[-1].version if versions else None
        return current.properties.version if current else None

    def stage_pending(self, name: str, value: SecretValue, *, token: str) -> str:
        """``PUT /secrets/{name}-9p`` tagged pending + token; the main secret is untouched."""
        azure_name = self.names.to_azure(name)
        frozen = freeze_value(value)
        _check_token(token)
        current = self._get(name, azure_name)  # the secret must exist
        if _token_of(current.properties) == token:  # already promoted
            _same_value_or_conflict(name, token, current, frozen)
            return str(current.properties.version)
        pending = self._pending(name)
        if pending is not None and _token_of(pending.properties) == token:
            _same_value_or_conflict(name, token, pending, frozen)
            return str(pending.properties.version)
        tags = {TAG_STAGE: "pending", TAG_TOKEN: token}
        sibling = self.names.pending_of(name)
        try:
            created = self._set(name, sibling, frozen, tags)
        except VersionConflict:
            # The sibling was left soft-deleted (its main secret purged by hand): take it back.
            self._recover_one(name, sibling)
            created = self._set(name, sibling, frozen, tags)
        if pending is not None:  # another token's pending value: replaced, so unreadable
            self._retire_pending(name, pending, "replaced")
        log.info("pending staged", extra={"action": "azure.stage_pending", "secret": name})
        return str(created.properties.version)

    def promote(self, name: str, *, token: str) -> str:
        """Copy the pending value into ``{name}`` as a new version, then disable the sibling.

        Re-running after a crash between the two steps finds the token on the current version
        and only finishes the second step: never a second new version."""
        azure_name = self.names.to_azure(name)
        _check_token(token)
        current = self._get(name, azure_name)
        pending = self._pending(name)
        ours = pending if pending and _token_of(pending.properties) == token else None
        if _token_of(current.properties) == token:
            if ours is not None:
                self._retire_pending(name, ours, "consumed")
            return str(current.properties.version)
        if ours is None:
            raise SecretNotFound(name, f"no version staged under token {token}")
        if any(_token_of(v) == token for v in self._versions_of(name, azure_name)):
            self._retire_pending(name, ours, "consumed")
            raise VersionConflict(
                f"Version conflict on {name!r}: token {token} was promoted and has since been "
                "replaced by a newer version."
            )
        tags = {
            TAG_ORIGIN: "promote",
            TAG_TOKEN: token,
            TAG_PREVIOUS: str(current.properties.version),
        }
        created = self._set(name, azure_name, _decode(ours), tags)
        self._retire_pending(name, ours, "consumed")
        log.info("pending promoted", extra={"action": "azure.promote", "secret": name})
        return str(created.properties.version)

    def discard_pending(self, name: str, *, token: str) -> None:
        """Disable the sibling's version if it is still pending under ``token``."""
        self.names.to_azure(name)
        _check_token(token)
        pending = self._pending(name)
        if pending is not None and _token_of(pending.properties) == token:
            self._retire_pending(name, pending, "discarded")

    def rollback(self, name: str, *, token: str) -> str:
        """If ``token`` is current, write the previous value again as a new version."""
        azure_name = self.names.to_azure(name)
        _check_token(token)
        current = self._get(name, azure_name)
        if _token_of(current.properties) != token:
            return str(current.properties.version)
        previous_id = self._previous_id(name, azure_name, current.properties)
        if previous_id is None:
            raise SecretNotFound(name, "no previous version to roll back to")
        previous = self._get(name, azure_name, previous_id)
        tags = {
            TAG_ORIGIN: "rollback",
            TAG_ROLLBACK_OF: token,
            TAG_PREVIOUS: str(current.properties.version),
        }
        created = self._set(name, azure_name, _decode(previous), tags)
        log.info("promotion rolled back", extra={"action": "azure.rollback", "secret": name})
        return str(created.properties.version)

    def delete(self, name: str, *, force: bool = False) -> None:
        """``DELETE /secrets/{name}`` (soft delete, waited for); ``force`` also purges."""
        azure_name = self.names.to_azure(name)
        try:
            self._delete_one(name, azure_name)
        except SecretNotFound:
            if not (force and self._is_deleted(name, azure_name)):
                raise
        self._ignore_missing(lambda: self._delete_one(name, self.names.pending_of(name)))
        if force:
            self.purge(name)
        log.info("secret deleted", extra={"action": "azure.delete", "secret": name})

    def restore(self, name: str) -> None:
        """``POST /deletedsecrets/{name}/recover``: undo a delete within the retention period."""
        azure_name = self.names.to_azure(name)
        self._recover_one(name, azure_name)
        self._ignore_missing(lambda: self._recover_one(name, self.names.pending_of(name)))
        log.info("secret recovered", extra={"action": "azure.recover", "secret": name})

    recover = restore

    def purge(self, name: str) -> None:
        """``DELETE /deletedsecrets/{name}``: remove a deleted secret for good; the name is free."""
        azure_name = self.names.to_azure(name)
        try:
            self._call(name, lambda: self._client.purge_deleted_secret(azure_name))
        except SecretNotFound:
            raise SecretNotFound(name, "it is not in the deleted state; delete it first") from None
        sibling = self.names.pending_of(name)
        self._ignore_missing(
            lambda: self._call(name, lambda: self._client.purge_deleted_secret(sibling))
        )
        log.info("secret purged", extra={"action": "azure.purge", "secret": name})

    def versions(self, name: str) -> list[VersionInfo]:
        """``GET /secrets/{name}/versions`` plus the pending sibling; stages from the tags."""
        azure_name = self.names.to_azure(name)
        items = self._versions_of(name, azure_name)
        if not items:
            raise SecretNotFound(name)
        try:
            current: SecretProperties = self._get(name, azure_name).properties
        except SecretDisabled:  # latest is disabled: it is still the latest
            current = items[-1]
        previous_id = self._previous_id(name, azure_name, current)
        infos = []
        for item in items:
            stages = set()
            if item.version == current.version:
                stages.add(Stage.CURRENT)
            if item.version == previous_id:
                stages.add(Stage.PREVIOUS)
            infos.append(
                VersionInfo(
                    version_id=str(item.version),
                    created=item.created_on,
                    stages=frozenset(stages),
                    token=_token_of(item),
                )
            )
        pending = self._pending(name)
        if pending is not None:
            infos.append(
                VersionInfo(
                    version_id=str(pending.properties.version),
                    created=pending.properties.created_on,
                    stages=frozenset({Stage.PENDING}),
                    token=_token_of(pending.properties),
                )
            )
        return infos

    def list(self, prefix: str = "") -> list[str]:
        """``GET /secrets`` (every page); foreign and internal names are skipped."""
        validate_prefix(prefix)
        items = self._call(prefix or "*", lambda: list(self._client.list_properties_of_secrets()))
        names = set()
        for item in items:
            name = self.names.from_azure(item.name or "")
            if name is not None and name.startswith(prefix) and self._fits(name):
                names.add(name)
        return sorted(names)

    def _fits(self, name: str) -> bool:
        try:
            self.names.to_azure(name)
        except KeyturnError:
            return False
        return True

    def check_access(self, names: Sequence[str]) -> builtins.list[AccessCheck]:
        """What this principal may do on ``names`` (see :mod:`.access`); writes nothing."""
        from rotation.providers.azure.access import check_access

        return check_access(self, names)

    def close(self) -> None:
        """Close the SecretClient's connections (and the credential if this provider made it)."""
        self._client.close()
        if self._owns_credential:
            _close_credential(self._credential)

    # --- soft delete helpers ------------------------------------------------------------------

    def _delete_one(self, name: str, azure_name: str) -> None:
        poller = self._call(name, lambda: self._client.begin_delete_secret(azure_name))
        self._wait(name, poller, "deletion")

    def _recover_one(self, name: str, azure_name: str) -> None:
        try:
            poller = self._call(name, lambda: self._client.begin_recover_deleted_secret(azure_name))
        except SecretNotFound:
            raise SecretNotFound(name, "it is not in the deleted state") from None
        self._wait(name, poller, "recovery")

    def _wait(self, name: str, poller: Any, what: str) -> None:
        with self._errors(name):
            poller.wait(timeout=self._lro_timeout)
        if not poller.done():
            raise BackendUnavailable(
                f"Azure Key Vault's {what} of {name!r} did not finish within "
                f"{self._lro_timeout:.0f} s; check it with `az keyvault secret list-deleted` "
                "and retry."
            )

    def _is_deleted(self, name: str, azure_name: str) -> bool:
        try:
            self._call(name, lambda: self._client.get_deleted_secret(azure_name))
        except SecretNotFound:
            return False
        return True

    @staticmethod
    def _ignore_missing(action: Callable[[], object]) -> None:
        try:
            action()
        except SecretNotFound:
            pass


# --- module helpers -------------------------------------------------------------------------


def _check_token(token: str) -> None:
    if not isinstance(token, str) or not 1 <= len(token) <= 200:
        raise ValueError("a rotation token must be a string of 1-200 characters")


def _token_of(properties: SecretProperties) -> str | None:
    return (properties.tags or {}).get(TAG_TOKEN)


def _decode(secret: KeyVaultSecret) -> SecretValue:
    """Strings as stored; ``application/json`` objects as read-only dicts."""
    text = secret.value or ""
    content_type = (secret.properties.content_type or "").split(";")[0].strip().lower()
    if content_type == JSON_CONTENT_TYPE:
        try:
            parsed = json.loads(text)
        except ValueError:
            return text
        if isinstance(parsed, dict):
            return freeze_value(parsed)
    return text


def _same_value_or_conflict(
    name: str, token: str, existing: KeyVaultSecret, value: SecretValue
) -> None:
    old = _decode(existing)
    if isinstance(old, str) != isinstance(value, str) or encode_value(old) != encode_value(value):
        raise VersionConflict(
            f"Version conflict on {name!r}: token {token} was already used with another value."
        )


def _oldest_first(items: list[SecretProperties]) -> list[SecretProperties]:
    """Creation order; ties within Key Vault's one-second resolution follow ``keyturn-previous``."""
    by_id = {item.version: item for item in items}
    depth: dict[str | None, int] = {}

    def chain(start: str | None) -> int:
        path: list[str | None] = []
        version = start
        while version in by_id and version not in depth and version not in path:
            path.append(version)
            version = (by_id[version].tags or {}).get(TAG_PREVIOUS)
        level = depth[version] + 1 if version in depth else 0
        for seen in reversed(path):
            depth[seen] = level
            level += 1
        return depth.get(start, 0)

    return sorted(items, key=lambda v: (v.created_on or _EARLIEST, chain(v.version)))
