"""The IAM and STS calls of the ``aws-iam`` kind, with errors translated at this boundary.

A message names the user, the access key id (not a secret: AWS shows it in every console
and log) and AWS's error code, never a secret access key and never AWS's own text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError
from botocore.exceptions import ConnectionError as BotoConnectionError

from rotation.errors import RotationError, TargetRejected
from rotation.values import SecretValue

__all__ = ["AccessKey", "Iam", "KeyInfo", "refusal"]

#: Codes with which AWS refuses a request's signature or key: the key does not (yet) work.
REFUSED_KEY = frozenset({"InvalidClientTokenId", "SignatureDoesNotMatch", "AuthFailure"})
_RETRYABLE = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "ServiceFailure",
        "InternalFailure",
        "InternalError",
        "RequestTimeout",
        "ConcurrentModification",
    }
)


@dataclass(frozen=True)
class AccessKey:
    """An access key; the secret half is kept out of ``repr``."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_value(cls, value: SecretValue, what: str) -> AccessKey:
        """``value`` as a key; ``what`` names it in errors (never the value itself)."""
        if not isinstance(value, Mapping):
            raise RotationError(
                f"{what} must be a JSON object with access_key_id and secret_access_key.",
                retryable=False,
            )
        missing = [
            name
            for name in ("access_key_id", "secret_access_key")
            if not isinstance(value.get(name), str) or not value.get(name)
        ]
        if missing:
            raise RotationError(f"{what} lacks {', '.join(missing)}.", retryable=False)
        token = value.get("session_token")
        return cls(
            str(value["access_key_id"]),
            str(value["secret_access_key"]),
            str(token) if isinstance(token, str) and token else None,
        )


@dataclass(frozen=True)
class KeyInfo:
    """One of a user's access keys, as ``ListAccessKeys`` describes it."""

    access_key_id: str
    active: bool


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or type(exc).__name__)
    return type(exc).__name__


def refusal(exc: Exception, action: str, *, endpoint: str) -> RotationError:
    """The Keyturn error for a boto error during ``action``."""
    if isinstance(exc, ClientError):
        code = _code(exc)
        if code in REFUSED_KEY:
            return TargetRejected(f"AWS refused the key used for {action} ({code}).", sqlstate=code)
        if code == "AccessDenied":
            return TargetRejected(
                f"AWS denied {action} ({code}): the key's policy must allow it "
                "(iam:ListAccessKeys, CreateAccessKey, UpdateAccessKey, DeleteAccessKey on the "
                "user).",
                sqlstate=code,
            )
        return TargetRejected(
            f"AWS refused {action} ({code}).", retryable=code in _RETRYABLE, sqlstate=code
        )
    if isinstance(exc, BotoConnectionError | ReadTimeoutError):
        return TargetRejected(
            f"Cannot reach AWS at {endpoint} for {action} ({type(exc).__name__}); retry later.",
            retryable=True,
        )
    if isinstance(exc, BotoCoreError):
        return TargetRejected(f"{action} failed ({type(exc).__name__}).", retryable=True)
    raise exc


class Iam:
    """IAM and STS clients signed with one key."""

    def __init__(
        self, key: AccessKey, *, region: str, endpoint_url: str | None, timeout: float
    ) -> None:
        self.key = key
        self.region = region
        self.endpoint_url = endpoint_url
        self.timeout = timeout
        self.where = endpoint_url or "AWS IAM"

    def client(self, service: str) -> Any:
        return boto3.session.Session().client(
            service,
            region_name=self.region,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.key.access_key_id,
            aws_secret_access_key=self.key.secret_access_key,
            aws_session_token=self.key.session_token,
            config=Config(
                connect_timeout=self.timeout,
                read_timeout=self.timeout,
                retries={"max_attempts": 2, "mode": "standard"},
            ),
        )

    def _call(self, service: str, action: str, method: str, **params: Any) -> Any:
        client = self.client(service)
        try:
            return getattr(client, method)(**params)
        except Exception as exc:
            raise refusal(exc, action, endpoint=self.where) from None
        finally:
            client.close()

    def caller_user(self) -> str:
        """The IAM user this key belongs to (``GetCallerIdentity``)."""
        arn = str(self._call("sts", "sts:GetCallerIdentity", "get_caller_identity")["Arn"])
        kind, _, path = arn.partition(":user/")
        if not path or not kind.startswith("arn:"):
            raise RotationError(
                f"The key {self.key.access_key_id} is not an IAM user's ({arn.split(':')[-1]}): "
                "aws-iam rotates IAM users' access keys.",
                retryable=False,
            )
        return path.rsplit("/", 1)[-1]

    def keys(self, user: str) -> list[KeyInfo]:
        answer = self._call(
            "iam", f"iam:ListAccessKeys of {user!r}", "list_access_keys", UserName=user
        )
        return [
            KeyInfo(str(k["AccessKeyId"]), k.get("Status") == "Active")
            for k in answer.get("AccessKeyMetadata", [])
        ]

    def create(self, user: str) -> AccessKey:
        """A new key, switched off at once (it works only once ``apply`` switches it on)."""
        made = self._call(
            "iam", f"iam:CreateAccessKey for {user!r}", "create_access_key", UserName=user
        )["AccessKey"]
        key = AccessKey(str(made["AccessKeyId"]), str(made["SecretAccessKey"]))
        try:
            self.set_active(user, key.access_key_id, active=False)
        except RotationError:
            self.delete(user, key.access_key_id)  # never leave an active key nobody holds
            raise
        return key

    def set_active(self, user: str, key_id: str, *, active: bool) -> None:
        status = "Active" if active else "Inactive"
        self._call(
            "iam",
            f"iam:UpdateAccessKey {key_id} of {user!r} to {status}",
            "update_access_key",
            UserName=user,
            AccessKeyId=key_id,
            Status=status,
        )

    def delete(self, user: str, key_id: str) -> None:
        try:
            self._call(
                "iam",
                f"iam:DeleteAccessKey {key_id} of {user!r}",
                "delete_access_key",
                UserName=user,
                AccessKeyId=key_id,
            )
        except TargetRejected as exc:
            if exc.sqlstate != "NoSuchEntity":
                raise

    def accepted(self) -> tuple[bool, str | None]:
        """Whether AWS accepts this key (STS ``GetCallerIdentity``), and the user it names."""
        try:
            return True, self.caller_user()
        except TargetRejected as exc:
            if exc.sqlstate in REFUSED_KEY:
                return False, None
            raise
