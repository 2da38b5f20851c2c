"""Translating botocore's exceptions into Keyturn's at the AWS boundary, most specific first.

AWS error codes are grouped in tables (authentication, permission, throttling); the messages say
what to do, as docs/backends/aws.md lists them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

from rotation.errors import (
    AuthenticationFailed,
    BackendError,
    BackendUnavailable,
    PermissionDenied,
    SecretNotFound,
    Throttled,
    VersionConflict,
)
from rotation.values import Stage

__all__ = ["translated"]

_MARKED_FOR_DELETION = re.compile(r"marked (for )?delet|scheduled for deletion", re.IGNORECASE)

_NO_CREDENTIALS = (
    "AWS credentials not found: run `aws configure`, or set AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY (plus AWS_SESSION_TOKEN for temporary credentials), or AWS_PROFILE, "
    "or run with an IAM role (instance profile, ECS task role, EKS service account)."
)
_AUTH_CODES = {
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
    "MissingAuthenticationToken",
}
_DENIED_CODES = {"AccessDenied", "AccessDeniedException", "DecryptionFailure"}
_THROTTLE_CODES = {
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
}
_BUSY_CODES = {
    "InternalServiceError",
    "InternalFailure",
    "ServiceUnavailable",
}


@contextmanager
def translated(
    name: str | None,
    *,
    prefix: str,
    region: str | None,
    stage: Stage | None = None,
    token: str | None = None,
    moving: bool = False,
) -> Iterator[None]:
    """Turn botocore's exceptions into Keyturn's, most specific first, keeping the cause."""
    try:
        yield
    except ClientError as exc:
        _raise_client_error(
            exc, name, prefix=prefix, region=region, stage=stage, token=token, moving=moving
        )
    except NoCredentialsError as exc:
        raise AuthenticationFailed(_NO_CREDENTIALS) from exc
    except (PartialCredentialsError, CredentialRetrievalError) as exc:
        raise AuthenticationFailed(
            f"AWS credentials are incomplete or could not be loaded ({exc}). {_NO_CREDENTIALS}"
        ) from exc
    except (ConnectionError, HTTPClientError) as exc:
        raise BackendUnavailable(
            f"Cannot reach AWS Secrets Manager in {region} ({type(exc).__name__}); "
            "check the network, AWS_REGION and AWS_ENDPOINT_URL, then retry."
        ) from exc
    except BotoCoreError as exc:
        if type(exc).__name__ in {"TokenRetrievalError", "SSOTokenLoadError"}:
            raise AuthenticationFailed(
                f"AWS SSO login expired ({type(exc).__name__}): run `aws sso login`."
            ) from exc
        raise BackendError(f"AWS Secrets Manager call failed: {exc}") from exc


def _raise_client_error(
    exc: ClientError,
    name: str | None,
    *,
    prefix: str,
    region: str | None,
    stage: Stage | None,
    token: str | None,
    moving: bool,
) -> NoReturn:
    code = _code(exc)
    error = exc.response.get("Error", {})
    message = str(error.get("Message", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    action = f"secretsmanager:{exc.operation_name}"
    shown = name or "(list)"
    if code == "ResourceNotFoundException":
        if name is None:
            raise BackendError(f"AWS answered {code}: {message}") from exc
        detail = None
        if stage is not None and "staging label" in message:
            detail = f"no {stage.value} version"
        elif prefix:
            detail = f"looked up as {prefix + name!r} in {region}"
        raise SecretNotFound(name, detail) from exc
    if code == "InvalidRequestException" and _MARKED_FOR_DELETION.search(message):
        raise SecretNotFound(shown, _scheduled_detail()) from exc
    if code == "ResourceExistsException" and token is not None:
        raise VersionConflict(
            f"Version conflict on {shown!r}: token {token} was already used with another value."
        ) from exc
    if code == "InvalidParameterException" and moving:
        raise VersionConflict(
            f"Version conflict on {shown!r}: its staging labels changed meanwhile ({message}); "
            "read it again and retry."
        ) from exc
    if code in _DENIED_CODES:
        raise PermissionDenied(
            f"AWS denied {action} on {shown!r} ({code}: {message}). Grant the IAM principal "
            f"{action} on this secret, and kms:Decrypt/kms:GenerateDataKey on its KMS key."
        ) from exc
    if code in _AUTH_CODES:
        raise AuthenticationFailed(
            f"AWS refused the credentials ({code}: {message}). Check AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY or the profile, that temporary credentials have not expired "
            "(`aws sts get-caller-identity`), and the system clock."
        ) from exc
    if code in _THROTTLE_CODES or status == 429:
        raise Throttled(
            f"AWS Secrets Manager is throttling requests ({code or status}) after retries with "
            "backoff: the account's request quota for this region is exceeded."
        ) from exc
    if code in _BUSY_CODES or status >= 500:
        raise BackendUnavailable(
            f"AWS Secrets Manager is throttling or unavailable ({code or status}) after "
            "retries with backoff; retry later or lower the request rate."
        ) from exc
    raise BackendError(f"AWS refused {action} on {shown!r} ({code}: {message}).") from exc


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _scheduled_detail() -> str:
    return (
        "it is scheduled for deletion and can be restored with "
        "`aws secretsmanager restore-secret` (or provider.restore(name)) until its recovery "
        "window ends"
    )
