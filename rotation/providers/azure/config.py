"""Azure Key Vault settings from the environment, the credential, and the SecretClient options
(timeouts, CA bundle, challenge check and a jittered retry policy)."""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from azure.core.credentials import AccessToken, TokenCredential
from azure.core.pipeline.policies import RetryPolicy

from rotation.config import env_flag
from rotation.errors import ConfigurationError

__all__ = [
    "StaticTokenCredential",
    "client_options",
    "settings_from_env",
    "verifies_challenge_by_default",
]

log = logging.getLogger("keyturn.providers.azure")

#: Hosts where the challenge's resource is checked by default (public and sovereign clouds).
_AZURE_VAULT_SUFFIXES = (
    ".vault.azure.net",
    ".vault.azure.cn",
    ".vault.usgovcloudapi.net",
    ".vault.microsoftazure.de",
    ".managedhsm.azure.net",
)


class StaticTokenCredential:
    """A fixed bearer token, for Key Vault emulators and tests only (no real vault accepts one
    for long: use a service principal or ``DefaultAzureCredential`` there)."""

    def __init__(self, token: str, lifetime: int = 3600) -> None:
        if not token:
            raise ConfigurationError("AZURE_KEY_VAULT_TOKEN is empty.")
        self._token = token
        self._lifetime = lifetime

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + self._lifetime)

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:  # never show the token
        return "StaticTokenCredential(<hidden>)"


class _JitteredRetryPolicy(RetryPolicy[Any, Any]):
    """azure-core's exponential backoff with "equal jitter": a sleep in [backoff/2, backoff]."""

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        backoff = float(super().get_backoff_time(settings))
        return backoff / 2 + random.uniform(0, backoff / 2)


def settings_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Keyword arguments of the provider from ``AZURE_*`` variables, all but the credential."""
    url = (environ.get("AZURE_KEY_VAULT_URL") or "").strip()
    if not url:
        raise ConfigurationError(
            "AZURE_KEY_VAULT_URL is not set: set it to your vault's URL, "
            "e.g. https://my-vault.vault.azure.net/ "
            "(az keyvault show --name NAME --query properties.vaultUri)."
        )
    verify = env_flag("AZURE_KEY_VAULT_VERIFY_CHALLENGE_RESOURCE", None, environ=environ)
    ca_bundle = environ.get("AZURE_CA_BUNDLE") or environ.get("REQUESTS_CA_BUNDLE") or None
    retry_total = int(_number(environ, "AZURE_KEY_VAULT_RETRY_TOTAL", 5))
    read_timeout = _number(environ, "AZURE_KEY_VAULT_TIMEOUT", 15.0)
    _check_url(url)  # before building a credential
    return {
        "vault_url": url,
        "prefix": (environ.get("AZURE_SECRETS_PREFIX") or "").strip(),
        "verify_challenge_resource": verify,
        "ca_bundle": ca_bundle,
        "retry_total": retry_total,
        "read_timeout": read_timeout,
    }


def verifies_challenge_by_default(vault_url: str) -> bool:
    """True for Azure's own vault hosts, where the challenge's resource can be checked."""
    host = (urlsplit(vault_url).hostname or "").lower()
    return host.endswith(_AZURE_VAULT_SUFFIXES)


def client_options(
    *,
    verify_challenge_resource: bool,
    ca_bundle: str | None,
    retry_total: int,
    retry_backoff_factor: float,
    retry_backoff_max: float,
    connection_timeout: float,
    read_timeout: float,
    operation_timeout: float,
) -> dict[str, Any]:
    """``SecretClient`` keyword arguments, after checking the CA bundle and the retry count."""
    if ca_bundle is not None and not os.path.isfile(ca_bundle):
        raise ConfigurationError(
            f"The CA bundle {ca_bundle!r} (AZURE_CA_BUNDLE / REQUESTS_CA_BUNDLE) is not a file."
        )
    if retry_total < 0:
        raise ConfigurationError("AZURE_KEY_VAULT_RETRY_TOTAL must be >= 0.")
    retry_policy = _JitteredRetryPolicy(
        retry_total=retry_total,
        retry_connect=retry_total,
        retry_read=retry_total,
        retry_status=retry_total,
        retry_backoff_factor=retry_backoff_factor,
        retry_backoff_max=retry_backoff_max,
        timeout=operation_timeout,
    )
    options: dict[str, Any] = {
        "verify_challenge_resource": verify_challenge_resource,
        "retry_policy": retry_policy,
        "connection_timeout": connection_timeout,
        "read_timeout": read_timeout,
    }
    if ca_bundle is not None:
        options["connection_verify"] = ca_bundle
    return options


def _check_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigurationError(
            f"AZURE_KEY_VAULT_URL must be an https URL such as https://my-vault.vault.azure.net/, "
            f"not {url!r}: Key Vault only accepts bearer tokens over TLS."
        )
    return url.strip().rstrip("/")


def _number(environ: Mapping[str, str], key: str, default: float) -> float:
    raw = (environ.get(key) or "").strip()
    if not raw:
        return default
    try:
        number = float(raw)
    except ValueError:
        raise ConfigurationError(f"{key} must be a number, not {raw!r}.") from None
    if number < 0 or number != number:
        raise ConfigurationError(f"{key} must be >= 0, not {raw!r}.")
    return number


def _credential_from_env(environ: Mapping[str, str]) -> TokenCredential:
    static = environ.get("AZURE_KEY_VAULT_TOKEN")
    if static:
        log.warning(
            "using a static bearer token (AZURE_KEY_VAULT_TOKEN): for emulators and tests only",
            extra={"action": "azure.static_token"},
        )
        return StaticTokenCredential(static)
    tenant = environ.get("AZURE_TENANT_ID")
    client_id = environ.get("AZURE_CLIENT_ID")
    secret = environ.get("AZURE_CLIENT_SECRET")
    if tenant and client_id and secret:
        from azure.identity import ClientSecretCredential

        return ClientSecretCredential(tenant, client_id, secret)
    if secret:
        raise ConfigurationError(
            "AZURE_CLIENT_SECRET is set but AZURE_TENANT_ID or AZURE_CLIENT_ID is not: a service "
            "principal needs all three (or unset AZURE_CLIENT_SECRET to use "
            "DefaultAzureCredential)."
        )
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def _close_credential(credential: object) -> None:
    close = getattr(credential, "close", None)
    if callable(close):
        close()
