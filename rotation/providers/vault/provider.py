"""HashiCorp Vault / OpenBao KV v2 provider (hvac).

Layout inside the KV v2 mount ``VAULT_MOUNT_POINT`` (default ``secret``), under
``VAULT_PATH_PREFIX``:

- ``<prefix><name>`` — the secret. Every Keyturn version is one KV version; the version id is the
  KV version number. A string is stored as ``{"value": "..."}`` (what ``vault kv put NAME
  value=...`` writes), an object as its own data, wrapped as ``{"__keyturn_object__": {...}}``
  only where it would otherwise be misread (see :func:`encode_data`).
- ``<prefix>.keyturn/pending/<name>`` — the pending value of a rotation, ``{"token", "data"}``
  (+ ``"promoting_to"`` while a promotion is under way). Valid names never have a segment starting
  with ``.``, so this can never collide with a secret, and ``list`` hides it.
- ``custom_metadata["keyturn-token-<N>"]`` on the secret — the rotation token promoted as version N
  (at most :data:`MAX_TOKEN_CLAIMS`, only for retained versions).

Every write is check-and-set (``options.cas``). A write whose answer was lost and which urllib3
re-sent meets a CAS mismatch; it is recognised as our own when version ``cas + 1`` holds exactly
the data we wrote.
"""

from __future__ import annotations

import builtins
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import hvac
from hvac import utils as hvac_utils

from rotation.errors import InvalidSecretName, SecretNotFound, VersionConflict
from rotation.names import validate_name, validate_prefix
from rotation.providers.base import AccessCheck, Capability
from rotation.providers.vault.auth import (
    VaultAuth,
    VaultConnection,
    clean_path,
    settings_from_env,
)
from rotation.values import (
    SecretValue,
    SecretVersion,
    Stage,
    VersionInfo,
    encode_value,
    freeze_value,
)

__all__ = ["MAX_TOKEN_CLAIMS", "VaultProvider", "decode_data", "encode_data"]

log = logging.getLogger("keyturn.providers.vault")

MAX_TOKEN_CLAIMS = 20
OBJECT_KEY = "__keyturn_object__"
PENDING_DIR = ".keyturn/pending/"
_CLAIM = "keyturn-token-"


def encode_data(value: SecretValue) -> dict[str, Any]:
    """KV data for ``value``: ``{"value": s}`` for a string, the object itself otherwise.

    An object that would read back as something else — exactly ``{"value": <string>}``, or
    exactly ``{"__keyturn_object__": {...}}`` — is wrapped as ``{"__keyturn_object__": obj}``."""
    if isinstance(value, str):
        return {"value": value}
    plain: dict[str, Any] = json.loads(encode_value(value))
    if _is_string_form(plain) or _is_wrapped(plain):
        return {OBJECT_KEY: plain}
    return plain


def decode_data(data: Mapping[str, Any]) -> SecretValue:
    """Inverse of :func:`encode_data`; also reads what plain ``vault kv put`` wrote."""
    if _is_string_form(data):
        return str(data["value"])
    if _is_wrapped(data):
        return freeze_value(data[OBJECT_KEY])
    return freeze_value(dict(data))


def _is_string_form(data: Mapping[str, Any]) -> bool:
    return list(data) == ["value"] and isinstance(data["value"], str)


def _is_wrapped(data: Mapping[str, Any]) -> bool:
    return list(data) == [OBJECT_KEY] and isinstance(data[OBJECT_KEY], Mapping)


@dataclass(frozen=True)
class _Pending:
    token: str
    data: dict[str, Any]
    kv_version: int  # of the sibling, for check-and-set
    created: datetime | None
    promoting_to: int | None


class VaultProvider:
    """Secrets in a Vault/OpenBao KV v2 mount; pending values in a hidden sibling path."""

    name = "vault"
    capabilities = frozenset({Capability.CHECK_AND_SET})

    def __init__(
        self,
        address: str,
        auth: VaultAuth,
        *,
        mount_point: str = "secret",
        path_prefix: str = "",
        verify: bool | str = True,
        namespace: str | None = None,
        timeout: float = 10.0,
        retries: int = 4,
    ) -> None:
        self.mount = clean_path("VAULT_MOUNT_POINT", mount_point) or "secret"
        prefix = clean_path("VAULT_PATH_PREFIX", path_prefix)
        self.prefix = f"{prefix}/" if prefix else ""
        self._conn = VaultConnection(
            address, auth, verify=verify, namespace=namespace, timeout=timeout, retries=retries
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> VaultProvider:
        """Configured from ``VAULT_*`` variables; see :func:`settings_from_env`."""
        return cls(**settings_from_env(environ))

    @property
    def client(self) -> hvac.Client:
        """The underlying hvac client (one per provider, pooled session)."""
        return self._conn.client

    # --- the Provider protocol ------------------------------------------------------------

    def read(self, name: str, *, stage: Stage = Stage.CURRENT) -> SecretVersion:
        validate_name(name)
        if stage is Stage.PENDING:
            pending = self._pending(name)
            meta = self._metadata(name)
            if pending is None or self._landed(name, meta, pending) is not None:
                raise SecretNotFound(name, "no pending version")
            data = pending.data
            return SecretVersion(name, decode_data(data), pending.token, pending.token)
        version = None
        if stage is Stage.PREVIOUS:
            version = _previous(self._metadata(name))
            if version is None:
                raise SecretNotFound(name, "no previous version")
        data, meta = self._read_version(name, version)
        number = int(meta["version"])
        token = _claims(meta.get("custom_metadata")).get(number)
        return SecretVersion(name, decode_data(data), str(number), token)

    def write(self, name: str, value: SecretValue, *, expected_version: str | None = None) -> str:
        validate_name(name)
        data = encode_data(freeze_value(value))
        if expected_version is None:
            meta = self._metadata_or_none(name)
            cas = int(meta["current_version"]) if meta else 0
        elif expected_version.isdigit() and int(expected_version) > 0:
            cas = int(expected_version)
        else:
            raise VersionConflict(
                f"Version conflict on {name!r}: {expected_version!r} is not a Vault KV version."
            )
        version = self._cas_write(self._path(name), data, cas, name)
        _log("secret written", "vault.write", name, version)
        return str(version)

    def stage_pending(self, name: str, value: SecretValue, *, token: str) -> str:
        validate_name(name)
        data = encode_data(freeze_value(value))
        meta = self._metadata(name)
        pending = self._pending(name)
        cas = 0
        if pending is not None:
            if pending.token == token:
                if pending.data != data:
                    raise _token_reused(name, token)
                landed = self._settle(name, meta, pending)
                return str(landed) if landed is not None else token
            if self._settle(name, meta, pending) is None:
                cas = pending.kv_version
        for version, claimed in _claims(meta.get("custom_metadata")).items():
            if claimed == token:
                try:
                    promoted, _ = self._read_version(name, version)
                except SecretNotFound:
                    promoted = None
                if promoted != data:
                    raise _token_reused(name, token)
                return str(version)
        self._cas_write(self._pending_path(name), {"token": token, "data": data}, cas, name)
        _log("pending staged", "vault.stage_pending", name)
        return token

    def promote(self, name: str, *, token: str) -> str:
        validate_name(name)
        meta = self._metadata(name)
        current = int(meta["current_version"])
        pending = self._pending(name)
        if pending is not None and pending.token == token:
            landed = self._landed(name, meta, pending)
            if landed is None:
                if pending.promoting_to != current + 1:
                    body = {"token": token, "data": pending.data, "promoting_to": current + 1}
                    self._cas_write(self._pending_path(name), body, pending.kv_version, name)
                landed = self._cas_write(self._path(name), pending.data, current, name)
            self._claim(name, landed, token)
            self._drop_pending(name)
            _log("promoted", "vault.promote", name, landed)
            if landed < current:
                raise _superseded(name, token, landed, current)
            return str(landed)
        claims = _claims(meta.get("custom_metadata"))
        if claims.get(current) == token:
            return str(current)
        for version, claimed in claims.items():
            if claimed == token:
                raise _superseded(name, token, version, current)
        raise SecretNotFound(name, f"no version staged under token {token}")

    def discard_pending(self, name: str, *, token: str) -> None:
        validate_name(name)
        pending = self._pending(name)
        if pending is None or pending.token != token:
            return
        meta = self._metadata_or_none(name)
        if meta is not None and self._settle(name, meta, pending) is not None:
            return  # it was promoted after all: nothing pending any more
        self._drop_pending(name)

    def rollback(self, name: str, *, token: str) -> str:
        validate_name(name)
        meta = self._metadata(name)
        current = int(meta["current_version"])
        claims = _claims(meta.get("custom_metadata"))
        if claims.get(current) != token:
            return str(current)
        previous = _previous(meta)
        if previous is None:
            raise SecretNotFound(name, "no previous version to roll back to")
        data, _ = self._read_version(name, previous)
        version = self._cas_write(self._path(name), data, current, name)
        if previous in claims:
            self._claim(name, version, claims[previous])
        _log("rolled back", "vault.rollback", name, version)
        return str(version)

    def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        folder = prefix.rpartition("/")[0]
        todo = [f"{folder}/" if folder else ""]
        names: list[str] = []
        while todo:
            here = todo.pop()
            for key in self._list_folder(here):
                full = here + key
                if key.startswith("."):
                    continue  # .keyturn/ and anything no valid name can reach
                if key.endswith("/"):
                    if full.startswith(prefix) or prefix.startswith(full):
                        todo.append(full)
                elif full.startswith(prefix) and _is_valid(full):
                    names.append(full)
        return sorted(names)

    def delete(self, name: str, *, force: bool = False) -> None:
        """``DELETE /v1/{mount}/metadata/{path}``: every version, for good.

        KV v2 has no recovery window, so ``force`` changes nothing."""
        validate_name(name)
        self._metadata(name)
        self._delete_all(self._path(name), name)
        self._drop_pending(name)
        _log("secret deleted", "vault.delete", name)

    def versions(self, name: str) -> builtins.list[VersionInfo]:
        validate_name(name)
        meta = self._metadata(name)
        current = int(meta["current_version"])
        previous = _previous(meta)
        claims = _claims(meta.get("custom_metadata"))
        infos = []
        for number in sorted(int(k) for k in meta.get("versions") or {}):
            entry = meta["versions"][str(number)]
            if entry.get("destroyed"):
                continue
            stages: set[Stage] = {Stage.CURRENT} if number == current and _live(entry) else set()
            if number == previous:
                stages.add(Stage.PREVIOUS)
            created = _time(entry.get("created_time"))
            infos.append(VersionInfo(str(number), created, frozenset(stages), claims.get(number)))
        pending = self._pending(name)
        if pending is not None and self._landed(name, meta, pending) is None:
            pending_stage = frozenset({Stage.PENDING})
            infos.append(VersionInfo(pending.token, pending.created, pending_stage, pending.token))
        return infos

    def check_access(self, names: Sequence[str]) -> builtins.list[AccessCheck]:
        """What this token may do on ``names`` (``sys/capabilities-self``); changes nothing."""
        from rotation.providers.vault.access import check_access

        return check_access(self, names)

    def close(self) -> None:
        self._conn.close()

    # --- KV v2 calls ----------------------------------------------------------------------

    def _path(self, name: str) -> str:
        return self.prefix + name

    def _pending_path(self, name: str) -> str:
        return self.prefix + PENDING_DIR + name

    def _metadata(self, name: str) -> dict[str, Any]:
        """``GET /v1/{mount}/metadata/{path}``; :class:`SecretNotFound` if absent."""
        path = self._path(name)
        answer = self._conn.call(
            lambda c: c.secrets.kv.v2.read_secret_metadata(path, mount_point=self.mount), name
        )
        meta: dict[str, Any] = answer["data"]
        return meta

    def _metadata_or_none(self, name: str) -> dict[str, Any] | None:
        try:
            return self._metadata(name)
        except SecretNotFound:
            return None

    def _read_version(
        self, name: str, version: int | None = None, path: str | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``GET /v1/{mount}/data/{path}?version=N``: (data, metadata); deleted counts as absent."""
        where = path or self._path(name)
        answer = self._conn.call(
            lambda c: c.secrets.kv.v2.read_secret_version(
                where, version=version, mount_point=self.mount, raise_on_deleted_version=True
            ),
            name,
        )
        return answer["data"]["data"] or {}, answer["data"]["metadata"] or {}

    def _cas_write(self, path: str, data: dict[str, Any], cas: int, name: str) -> int:
        """``POST /v1/{mount}/data/{path}`` with ``options.cas``; the new KV version number."""
        try:
            answer = self._conn.call(
                lambda c: c.secrets.kv.v2.create_or_update_secret(
                    path, secret=data, cas=cas, mount_point=self.mount
                ),
                name,
            )
        except VersionConflict as conflict:
            try:  # a re-sent request whose first attempt landed: recognise our own write
                landed, _ = self._read_version(name, cas + 1, path)
            except SecretNotFound:
                landed = None
            if landed != data:
                raise VersionConflict(
                    f"Version conflict on {name!r}: it is no longer at version {cas}; another "
                    "writer changed it first. Read it again and retry."
                ) from conflict
            return cas + 1
        return int(answer["data"]["version"])

    def _pending(self, name: str) -> _Pending | None:
        try:
            data, meta = self._read_version(name, path=self._pending_path(name))
        except SecretNotFound:
            return None
        if not isinstance(data.get("token"), str) or not isinstance(data.get("data"), dict):
            return None
        target = data.get("promoting_to")
        return _Pending(
            token=data["token"],
            data=data["data"],
            kv_version=int(meta["version"]),
            created=_time(meta.get("created_time")),
            promoting_to=target if isinstance(target, int) else None,
        )

    def _drop_pending(self, name: str) -> None:
        """``DELETE /v1/{mount}/metadata/{.keyturn/pending/path}`` (204 even when absent)."""
        self._delete_all(self._pending_path(name), name)

    def _delete_all(self, path: str, name: str) -> None:
        kv2 = self.client.secrets.kv.v2
        self._conn.call(lambda _: kv2.delete_metadata_and_all_versions(path, self.mount), name)

    def _landed(self, name: str, meta: Mapping[str, Any], pending: _Pending) -> int | None:
        """The KV version an interrupted promotion of ``pending`` already wrote, if any."""
        target = pending.promoting_to
        if target is None or target > int(meta["current_version"]):
            return None
        if _claims(meta.get("custom_metadata")).get(target) == pending.token:
            return target
        try:
            data, _ = self._read_version(name, target)
        except SecretNotFound:
            return None
        return target if data == pending.data else None

    def _settle(self, name: str, meta: Mapping[str, Any], pending: _Pending) -> int | None:
        """Finish the bookkeeping of an interrupted promotion; its version, or None."""
        landed = self._landed(name, meta, pending)
        if landed is not None:
            self._claim(name, landed, pending.token)
            self._drop_pending(name)
        return landed

    def _claim(self, name: str, version: int, token: str) -> None:
        """Record ``token`` for ``version`` (``POST /v1/{mount}/metadata/{path}``)."""
        meta = self._metadata(name)
        custom = dict(meta.get("custom_metadata") or {})
        if custom.get(f"{_CLAIM}{version}") == token:
            return
        retained = {int(k) for k in meta.get("versions") or {}}
        claims = {v: t for v, t in _claims(custom).items() if v in retained}
        claims[version] = token
        newest = sorted(claims)[-MAX_TOKEN_CLAIMS:]
        custom = {k: v for k, v in custom.items() if not k.startswith(_CLAIM)}
        custom.update({f"{_CLAIM}{v}": claims[v] for v in newest})
        url = hvac_utils.format_url(
            "/v1/{mount}/metadata/{path}", mount=self.mount, path=self._path(name)
        )
        self._conn.call(lambda c: c.adapter.post(url, json={"custom_metadata": custom}), name)

    def _list_folder(self, folder: str) -> builtins.list[str]:
        """``LIST /v1/{mount}/metadata/{folder}``; an absent folder is empty."""
        path = self.prefix + folder
        try:
            answer = self._conn.call(
                lambda c: c.secrets.kv.v2.list_secrets(path, mount_point=self.mount), folder or None
            )
        except SecretNotFound:
            return []
        return [str(k) for k in (answer.get("data") or {}).get("keys") or []]


def _log(message: str, action: str, name: str, version: int | None = None) -> None:
    log.info(message, extra={"action": action, "secret": name, "version": version})


# --- metadata helpers -------------------------------------------------------------------


def _claims(custom: Mapping[str, Any] | None) -> dict[int, str]:
    found = {}
    for key, token in (custom or {}).items():
        suffix = key[len(_CLAIM) :]
        if key.startswith(_CLAIM) and suffix.isdigit():
            found[int(suffix)] = str(token)
    return found


def _previous(meta: Mapping[str, Any]) -> int | None:
    """The highest live (not deleted, not destroyed) version below the current one."""
    current = int(meta["current_version"])
    versions = meta.get("versions") or {}
    live = [int(k) for k, entry in versions.items() if int(k) < current and _live(entry)]
    return max(live, default=None)


def _live(entry: Mapping[str, Any]) -> bool:
    if entry.get("destroyed"):
        return False
    deleted = _time(entry.get("deletion_time"))
    return deleted is None or deleted > datetime.now(UTC)


def _time(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    head, dot, tail = text.rstrip("Z").partition(".")
    try:  # Vault gives nanoseconds; datetime keeps microseconds
        return datetime.fromisoformat(f"{head}.{tail[:6]}" if dot else head).replace(tzinfo=UTC)
    except ValueError:
        return None


def _is_valid(name: str) -> bool:
    try:
        validate_name(name)
    except InvalidSecretName:
        return False
    return True


def _token_reused(name: str, token: str) -> VersionConflict:
    return VersionConflict(
        f"Version conflict on {name!r}: token {token} was already used with another value."
    )


def _superseded(name: str, token: str, version: int, current: int) -> VersionConflict:
    return VersionConflict(
        f"Version conflict on {name!r}: token {token} was promoted as version {version}, "
        f"but version {current} is current now."
    )
