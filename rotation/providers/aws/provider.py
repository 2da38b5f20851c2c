"""AWS Secrets Manager, through boto3, with AWS's own staging labels.

Stages map one to one: CURRENT = ``AWSCURRENT``, PENDING = ``AWSPENDING``, PREVIOUS =
``AWSPREVIOUS``. A rotation token is the ``ClientRequestToken`` of the version it writes, so the
version id *is* the token and AWS itself makes a repeated write idempotent. Plain readers
(``aws secretsmanager get-secret-value``) only ever get ``AWSCURRENT``.

Values are stored as ``SecretString``: strings as-is, JSON objects as JSON text. A string that
happens to parse as a JSON object is marked with the secret tag ``keyturn:string:<version id>``
(written before the version, so no reader can see the version unmarked); without that tag a
JSON object text reads back as an object, which is also how secrets written by other tools read.

See docs/backends/aws.md for the configuration and the error messages.
"""

from __future__ import annotations

import builtins
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import botocore.session
from botocore.exceptions import ClientError

from rotation.errors import (
    BackendError,
    ConfigurationError,
    KeyturnError,
    SecretNotFound,
    UnsupportedOperation,
    VersionConflict,
)
from rotation.names import validate_name, validate_prefix
from rotation.providers.aws.config import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_RECOVERY_WINDOW_DAYS,
    make_client,
    settings_from_env,
)
from rotation.providers.aws.errors import _code, _scheduled_detail, translated
from rotation.providers.base import AccessCheck, Capability
from rotation.values import (
    SecretValue,
    SecretVersion,
    Stage,
    VersionInfo,
    decode_value,
    encode_value,
    freeze_value,
)

__all__ = ["AWSSecretsManagerProvider"]

log = logging.getLogger("keyturn.providers.aws")

CURRENT, PENDING, PREVIOUS = "AWSCURRENT", "AWSPENDING", "AWSPREVIOUS"
_LABELS = {Stage.CURRENT: CURRENT, Stage.PENDING: PENDING, Stage.PREVIOUS: PREVIOUS}
_STAGES = {label: stage for stage, label in _LABELS.items()}

#: Tag key prefix marking a version whose string value merely looks like a JSON object.
STRING_TAG = "keyturn:string:"
#: How many (secret, version) marker answers a provider remembers.
_STRING_MARK_CACHE = 4096
#: Markers of versions that no longer carry a label are dropped after this many seconds.
STRING_TAG_GRACE = 3600
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32,64}")


class AWSSecretsManagerProvider:
    """Secrets in AWS Secrets Manager, optionally under a name prefix (``phagen/``)."""

    name = "aws"
    capabilities = frozenset({Capability.RESTORE, Capability.PURGE})

    def __init__(
        self,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        prefix: str = "",
        recovery_window_days: int = DEFAULT_RECOVERY_WINDOW_DAYS,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        botocore_session: botocore.session.Session | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_pool_connections: int = 20,
        page_size: int = 100,
    ) -> None:
        self.prefix = validate_prefix(prefix)
        if not 7 <= recovery_window_days <= 30:
            raise ConfigurationError(
                f"The AWS recovery window must be 7 to 30 days, not {recovery_window_days}; "
                "use delete(name, force=True) to delete without recovery."
            )
        self.recovery_window_days = recovery_window_days
        self.page_size = page_size
        self._string_marks: dict[tuple[str, str], bool] = {}
        self._marks_lock = threading.Lock()
        self.region, client = make_client(
            region=region,
            endpoint_url=endpoint_url,
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
            aws_session_token=aws_session_token,
            botocore_session=botocore_session,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_retries=max_retries,
            max_pool_connections=max_pool_connections,
        )
        #: The one boto3 client of this provider, reused by every call (thread-safe).
        self.client: Any = client

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> AWSSecretsManagerProvider:
        """``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``, ``AWS_SECRETS_PREFIX``,
        ``AWS_RECOVERY_WINDOW_DAYS``; credentials from boto3's default chain."""
        return cls(**settings_from_env(environ))

    # --- reading --------------------------------------------------------------------------

    def read(self, name: str, *, stage: Stage = Stage.CURRENT) -> SecretVersion:
        """``GetSecretValue(SecretId, VersionStage=AWSCURRENT|AWSPENDING|AWSPREVIOUS)``."""
        validate_name(name)
        with self._translated(name, stage=stage):
            answer = self.client.get_secret_value(
                SecretId=self._full(name), VersionStage=_LABELS[stage]
            )
        version_id = answer["VersionId"]
        if "SecretString" not in answer:
            raise UnsupportedOperation(
                f"Secret {name!r} holds SecretBinary, which Keyturn does not read; store text "
                "or a JSON object (SecretString) instead."
            )
        text: str = answer["SecretString"]
        is_json = _looks_like_object(text) and not self._marked_string(name, version_id)
        return SecretVersion(name, decode_value(text, is_json), version_id, token=version_id)

    def versions(self, name: str) -> list[VersionInfo]:
        """``DescribeSecret`` (deletion check), then ``ListSecretVersionIds`` pages."""
        validate_name(name)
        self._describe(name)
        found: list[VersionInfo] = []
        kwargs: dict[str, Any] = {"SecretId": self._full(name), "IncludeDeprecated": False}
        with self._translated(name):
            while True:
                page = self.client.list_secret_version_ids(MaxResults=100, **kwargs)
                for item in page.get("Versions", []):
                    stages = {_STAGES[s] for s in item.get("VersionStages", []) if s in _STAGES}
                    found.append(
                        VersionInfo(
                            version_id=item["VersionId"],
                            created=item.get("CreatedDate"),
                            stages=frozenset(stages),
                            token=item["VersionId"],
                        )
                    )
                if not page.get("NextToken"):
                    break
                kwargs["NextToken"] = page["NextToken"]
        rank = {Stage.PREVIOUS: 0, Stage.CURRENT: 1, Stage.PENDING: 2}
        return sorted(
            found,
            key=lambda v: (
                v.created.timestamp() if v.created else 0.0,
                min((rank[s] for s in v.stages), default=-1),
            ),
        )

    def list(self, prefix: str = "") -> list[str]:
        """``ListSecrets`` pages filtered by name prefix (then exactly, client-side)."""
        validate_prefix(prefix)
        wanted = self.prefix + prefix
        kwargs: dict[str, Any] = {"PaginationConfig": {"PageSize": self.page_size}}
        if wanted:
            kwargs["Filters"] = [{"Key": "name", "Values": [wanted]}]
        names = []
        with self._translated(None):
            for page in self.client.get_paginator("list_secrets").paginate(**kwargs):
                for item in page.get("SecretList", []):
                    full = item["Name"]
                    if item.get("DeletedDate") or not full.startswith(wanted):
                        continue
                    name = full[len(self.prefix) :]
                    try:
                        names.append(validate_name(name))
                    except KeyturnError:
                        log.debug(
                            "skipping a secret whose name Keyturn cannot use",
                            extra={"action": "aws.list.skip", "secret": full},
                        )
        return sorted(names)

    # --- writing --------------------------------------------------------------------------

    def write(self, name: str, value: SecretValue, *, expected_version: str | None = None) -> str:
        """``PutSecretValue`` (new AWSCURRENT), or ``CreateSecret`` when the name is new.

        ``expected_version`` is checked against ``DescribeSecret`` just before the put: AWS has
        no check-and-set, so a writer in between can still win (see docs/backends/aws.md)."""
        validate_name(name)
        text = encode_value(freeze_value(value))
        version_id = str(uuid.uuid4())
        string_marker = isinstance(value, str) and _looks_like_object(text)
        if expected_version is not None:
            current = self._current_id(name)
            if current != expected_version:
                raise VersionConflict(
                    f"Version conflict on {name!r}: expected version {expected_version}, "
                    f"current is {current}; read it again and retry."
                )
        if string_marker:
            self._mark_string(name, version_id, create_missing_ok=True)
        full = self._full(name)
        with self._translated(name):
            try:
                self.client.put_secret_value(
                    SecretId=full, ClientRequestToken=version_id, SecretString=text
                )
            except ClientError as exc:
                if _code(exc) != "ResourceNotFoundException":
                    raise
                self._create(full, version_id, text, string_marker)
        if string_marker:
            self._prune_string_marks(name)
        return version_id

    def _create(self, full: str, version_id: str, text: str, string_marker: bool) -> None:
        """``CreateSecret``; if another writer created the name meanwhile, put a version."""
        tags = [{"Key": STRING_TAG + version_id, "Value": str(int(time.time()))}]
        try:
            self.client.create_secret(
                Name=full,
                ClientRequestToken=version_id,
                SecretString=text,
                Tags=tags if string_marker else [],
            )
        except ClientError as exc:
            if _code(exc) != "ResourceExistsException":
                raise
            if string_marker:
                self.client.tag_resource(SecretId=full, Tags=tags)
            self.client.put_secret_value(
                SecretId=full, ClientRequestToken=version_id, SecretString=text
            )

    def stage_pending(self, name: str, value: SecretValue, *, token: str) -> str:
        """``PutSecretValue(ClientRequestToken=token, VersionStages=[AWSPENDING])``."""
        validate_name(name)
        _check_token(token)
        text = encode_value(freeze_value(value))
        if isinstance(value, str) and _looks_like_object(text):
            self._mark_string(name, token)
        with self._translated(name, token=token):
            answer = self.client.put_secret_value(
                SecretId=self._full(name),
                ClientRequestToken=token,
                SecretString=text,
                VersionStages=[PENDING],
            )
        return str(answer["VersionId"])

    def promote(self, name: str, *, token: str) -> str:
        """``UpdateSecretVersionStage(AWSCURRENT, MoveToVersionId=token, RemoveFromVersionId=
        <current>)``, then the same call removing AWSPENDING from it (AWS's finishSecret)."""
        validate_name(name)
        _check_token(token)
        labels = self._labels(name)
        mine = labels.get(token, set())
        if not mine:
            raise SecretNotFound(name, f"no version staged under token {token}")
        if CURRENT not in mine:
            if PENDING not in mine:
                raise VersionConflict(
                    f"Version conflict on {name!r}: token {token} is neither pending nor current."
                )
            self._move(name, CURRENT, to=token, away_from=_current(labels))
        if PENDING in mine:
            self._move(name, PENDING, to=None, away_from=token)
        return token

    def discard_pending(self, name: str, *, token: str) -> None:
        """``UpdateSecretVersionStage(AWSPENDING, RemoveFromVersionId=token)`` if still pending;
        the unlabelled version is deprecated and AWS deletes it in time."""
        validate_name(name)
        _check_token(token)
        try:
            labels = self._labels(name)
        except SecretNotFound:
            return
        if PENDING in labels.get(token, set()) and CURRENT not in labels[token]:
            self._move(name, PENDING, to=None, away_from=token)

    def rollback(self, name: str, *, token: str) -> str:
        """``UpdateSecretVersionStage(AWSCURRENT, MoveToVersionId=<previous>,
        RemoveFromVersionId=token)``; AWS then labels ``token`` AWSPREVIOUS."""
        validate_name(name)
        _check_token(token)
        labels = self._labels(name)
        current = _current(labels)
        if current != token:
            return current
        previous = _holder(labels, PREVIOUS)
        if previous is None:
            raise SecretNotFound(name, "no previous version to roll back to")
        self._move(name, CURRENT, to=previous, away_from=token)
        return previous

    def delete(self, name: str, *, force: bool = False) -> None:
        """``DeleteSecret(RecoveryWindowInDays=N)``, or ``ForceDeleteWithoutRecovery`` with
        ``force`` (which also purges a secret already scheduled for deletion)."""
        validate_name(name)
        if force:
            self._describe(name, allow_deleted=True)
            options: dict[str, Any] = {"ForceDeleteWithoutRecovery": True}
        else:
            self._describe(name)
            options = {"RecoveryWindowInDays": self.recovery_window_days}
        with self._translated(name):
            self.client.delete_secret(SecretId=self._full(name), **options)
        log.info(
            "secret deleted",
            extra={"action": "aws.delete", "secret": name, "force": force},
        )

    def restore(self, name: str) -> None:
        """``RestoreSecret``: cancel a scheduled deletion."""
        validate_name(name)
        with self._translated(name):
            self.client.restore_secret(SecretId=self._full(name))
        log.info("secret restored", extra={"action": "aws.restore", "secret": name})

    def purge(self, name: str) -> None:
        """``DeleteSecret(ForceDeleteWithoutRecovery)`` on a secret scheduled for deletion."""
        validate_name(name)
        if not self._describe(name, allow_deleted=True).get("DeletedDate"):
            raise SecretNotFound(name, "it is not scheduled for deletion; nothing to purge")
        self.delete(name, force=True)

    def check_access(self, names: Sequence[str]) -> builtins.list[AccessCheck]:
        """What this principal may do on ``names`` (see :mod:`.access`); writes nothing."""
        from rotation.providers.aws.access import check_access

        return check_access(self, names)

    def close(self) -> None:
        """Close the client's connection pool."""
        self.client.close()

    # --- helpers --------------------------------------------------------------------------

    def _full(self, name: str) -> str:
        return self.prefix + name

    def _describe(self, name: str, *, allow_deleted: bool = False) -> dict[str, Any]:
        """``DescribeSecret``; a secret scheduled for deletion counts as not found."""
        with self._translated(name):
            answer: dict[str, Any] = self.client.describe_secret(SecretId=self._full(name))
        if answer.get("DeletedDate") and not allow_deleted:
            raise SecretNotFound(name, _scheduled_detail())
        return answer

    def _labels(self, name: str) -> dict[str, set[str]]:
        """Version id -> staging labels, for versions that carry any."""
        stages = self._describe(name).get("VersionIdsToStages") or {}
        return {vid: set(labels) for vid, labels in stages.items() if labels}

    def _current_id(self, name: str) -> str | None:
        try:
            return _holder(self._labels(name), CURRENT)
        except SecretNotFound as exc:
            if "scheduled for deletion" in exc.message:
                raise
            return None

    def _move(self, name: str, label: str, *, to: str | None, away_from: str | None) -> None:
        """``UpdateSecretVersionStage``."""
        options: dict[str, Any] = {}
        if to is not None:
            options["MoveToVersionId"] = to
        if away_from is not None:
            options["RemoveFromVersionId"] = away_from
        with self._translated(name, moving=True):
            self.client.update_secret_version_stage(
                SecretId=self._full(name), VersionStage=label, **options
            )

    def _marked_string(self, name: str, version_id: str) -> bool:
        # a version's marker is written before the version exists and never changes, so the
        # answer is cached: a JSON-looking read then costs one request, like any other read
        key = (name, version_id)
        known = self._string_marks.get(key)
        if known is not None:
            return known
        tags = self._describe(name, allow_deleted=True).get("Tags") or []
        marked = any(t.get("Key") == STRING_TAG + version_id for t in tags)
        with self._marks_lock:
            self._string_marks[key] = marked
            while len(self._string_marks) > _STRING_MARK_CACHE:
                self._string_marks.pop(next(iter(self._string_marks)))
        return marked

    def _mark_string(self, name: str, version_id: str, *, create_missing_ok: bool = False) -> None:
        """``TagResource``: mark a version as a string before it exists."""
        tag = {"Key": STRING_TAG + version_id, "Value": str(int(time.time()))}
        try:
            with self._translated(name):
                self.client.tag_resource(SecretId=self._full(name), Tags=[tag])
        except SecretNotFound as exc:
            # A new secret gets its marker from CreateSecret(Tags=...) instead.
            if not create_missing_ok or "scheduled for deletion" in exc.message:
                raise

    def _prune_string_marks(self, name: str) -> None:
        """``UntagResource`` for markers of versions that lost their labels (best effort)."""
        try:
            answer = self._describe(name)
            labelled = {v for v, s in (answer.get("VersionIdsToStages") or {}).items() if s}
            stale = [
                t["Key"]
                for t in answer.get("Tags") or []
                if t["Key"].startswith(STRING_TAG)
                and t["Key"][len(STRING_TAG) :] not in labelled
                and _age(t.get("Value", "")) > STRING_TAG_GRACE
            ]
            if stale:
                with self._translated(name):
                    self.client.untag_resource(SecretId=self._full(name), TagKeys=stale)
        except KeyturnError as exc:
            log.warning(
                "could not prune string markers",
                extra={"action": "aws.prune", "secret": name, "error": type(exc).__name__},
            )

    def _translated(
        self,
        name: str | None,
        *,
        stage: Stage | None = None,
        token: str | None = None,
        moving: bool = False,
    ) -> AbstractContextManager[None]:
        """Turn botocore's exceptions into Keyturn's (see :mod:`rotation.providers.aws.errors`)."""
        return translated(
            name,
            prefix=self.prefix,
            region=self.region,
            stage=stage,
            token=token,
            moving=moving,
        )


def _check_token(token: str) -> None:
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise UnsupportedOperation(
            "AWS needs a rotation token of 32-64 letters, digits, '-' or '_' (it becomes the "
            "ClientRequestToken and version id); use uuid.uuid4().hex."
        )


def _holder(labels: dict[str, set[str]], label: str) -> str | None:
    for version_id, stages in labels.items():
        if label in stages:
            return version_id
    return None


def _current(labels: dict[str, set[str]]) -> str:
    current = _holder(labels, CURRENT)
    if current is None:
        raise BackendError(f"AWS listed no {CURRENT} version; the secret is malformed.")
    return current


def _looks_like_object(text: str) -> bool:
    if not text.lstrip().startswith("{"):
        return False
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _age(stamp: str) -> float:
    try:
        return time.time() - float(stamp)
    except ValueError:
        return float("inf")
