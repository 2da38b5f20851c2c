"""Translating azure-core's errors into Keyturn's at the Key Vault boundary, most specific first.

Messages say what to do (roles, firewall, soft-deleted names, CA bundles); docs/backends/azure.md
lists them.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from rotation.errors import (
    AuthenticationFailed,
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    KeyturnError,
    PermissionDenied,
    SecretDisabled,
    SecretNotFound,
    Throttled,
    VersionConflict,
)

__all__ = ["translated"]


@contextmanager
def translated(name: str, *, vault_url: str, retries: int) -> Iterator[None]:
    """Translate azure-core errors for an operation on ``name``, most specific first."""
    try:
        yield
    except KeyturnError:
        raise
    except ResourceNotFoundError as exc:
        raise SecretNotFound(name) from exc
    except ResourceExistsError as exc:
        raise VersionConflict(_conflict_message(name, exc)) from exc
    except ClientAuthenticationError as exc:
        if exc.status_code == 403:
            raise _forbidden(name, exc) from exc
        raise AuthenticationFailed(_auth_message(vault_url, exc)) from exc
    except HttpResponseError as exc:
        raise _from_status(name, exc, retries) from exc
    except (ServiceRequestError, ServiceResponseError) as exc:
        if _is_tls_verification_failure(exc):
            raise ConfigurationError(
                f"The TLS certificate of {vault_url} is not trusted: for a private CA "
                "or an emulator, set AZURE_CA_BUNDLE (or REQUESTS_CA_BUNDLE) to its PEM file."
            ) from exc
        raise BackendUnavailable(
            f"Azure Key Vault at {vault_url} did not answer for {name!r} after "
            f"{retries} retries ({type(exc).__name__}); check the network and "
            "the vault's firewall, then retry."
        ) from exc
    except AzureError as exc:
        raise BackendError(f"Azure Key Vault failed on {name!r} ({type(exc).__name__}).") from exc
    except ValueError as exc:
        if "challenge" not in str(exc).lower():
            raise
        raise ConfigurationError(
            f"Key Vault's authentication challenge for {vault_url} names another "
            "resource. For an emulator or a private endpoint that is not *.vault.azure.net, "
            "set AZURE_KEY_VAULT_VERIFY_CHALLENGE_RESOURCE=false."
        ) from exc


def _is_tls_verification_failure(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        if "CERTIFICATE_VERIFY_FAILED" in str(current):
            return True
        inner = getattr(current, "inner_exception", None)
        current = inner or current.__cause__ or current.__context__
    return False


def _status_code(exc: HttpResponseError) -> int:
    return int(exc.status_code or 0)


def _error_code(exc: HttpResponseError) -> str:
    error = exc.error
    if error is None:
        return ""
    inner = error.innererror.get("code") if isinstance(error.innererror, Mapping) else None
    return f"{error.code or ''}/{inner}" if inner else str(error.code or "")


def _is_disabled(exc: HttpResponseError) -> bool:
    """403 ``Forbidden/SecretDisabled`` ("Operation get is not allowed on a disabled secret."),
    not the other 403s whose text also says disabled (public network access disabled...)."""
    error = exc.error
    message = (error.message or "").lower() if error else ""
    return _error_code(exc).endswith("/SecretDisabled") or "disabled secret" in message


def _forbidden(name: str, exc: HttpResponseError) -> PermissionDenied:
    if _is_disabled(exc):
        return SecretDisabled(
            f"Secret {name!r} is disabled in Azure Key Vault (the version read is disabled): "
            "enable it (az keyvault secret set-attributes --enabled true) or write a new value."
        )
    return PermissionDenied(
        f"Permission denied on {name!r} in Azure Key Vault ({_error_code(exc) or 403}): the "
        "identity needs the 'Key Vault Secrets Officer' role (RBAC) or get/list/set/delete/"
        "recover/purge secret permissions (access policies), and the vault's firewall must "
        "admit this network."
    )


def _auth_message(vault_url: str, exc: ClientAuthenticationError) -> str:
    if exc.status_code is None:  # raised by the credential, before Key Vault saw anything
        first = str(exc.message or type(exc).__name__).splitlines()[0][:300]
        return (
            f"Azure authentication failed for {vault_url}: {first} Set AZURE_TENANT_ID, "
            "AZURE_CLIENT_ID and AZURE_CLIENT_SECRET, or sign in so DefaultAzureCredential "
            "finds a credential (managed identity, `az login`)."
        )
    return (
        f"Azure Key Vault at {vault_url} refused the credentials (401 {_error_code(exc)}): the "
        "token is invalid, expired or for another tenant; check AZURE_TENANT_ID/AZURE_CLIENT_ID/"
        "AZURE_CLIENT_SECRET or the identity DefaultAzureCredential picked."
    )


def _conflict_message(name: str, exc: HttpResponseError) -> str:
    return (
        f"Secret {name!r} is deleted but not purged in Azure Key Vault (409 "
        f"{_error_code(exc) or 'Conflict'}): a soft-deleted name stays reserved for the "
        "retention period. Recover it (provider.restore(name), or az keyvault secret recover) "
        "or purge it (provider.purge(name), or az keyvault secret purge), then retry."
    )


def _retry_after(exc: HttpResponseError) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        return float(headers.get("Retry-After", ""))
    except (TypeError, ValueError):
        return None


def _from_status(name: str, exc: HttpResponseError, retries: int) -> KeyturnError:
    status = _status_code(exc)
    code = _error_code(exc)
    if status == 401:
        return AuthenticationFailed(
            f"Azure Key Vault refused the credentials for {name!r} (401 {code})."
        )
    if status == 403:
        return _forbidden(name, exc)
    if status == 404:
        return SecretNotFound(name)
    if status == 409:
        return VersionConflict(_conflict_message(name, exc))
    if status == 429:
        return Throttled(
            f"Azure Key Vault is throttling requests for {name!r} (429 {code}) after {retries} "
            "retries: the vault's transaction quota is exceeded.",
            retry_after=_retry_after(exc),
        )
    if status >= 500:
        return BackendUnavailable(
            f"Azure Key Vault is unavailable or throttling ({status} {code}) for {name!r} after "
            f"{retries} retries; retry later."
        )
    return BackendError(f"Azure Key Vault refused the request for {name!r} ({status} {code}).")
