"""The Vault connection: settings, one hvac client over a pooled retrying session, login, errors.

The KV v2 logic lives in :mod:`rotation.providers.vault`; this module is everything below it:

- ``build_session`` — a ``requests.Session`` with a urllib3 ``Retry`` (429/5xx, connection and
  read errors, every method incl. POST and LIST: our writes are check-and-set or idempotent, so a
  re-sent request can never double-write silently) with exponential backoff and jitter;
- ``settings_from_env`` — the ``VAULT_*`` environment variables, checked;
- ``TokenAuth`` / ``AppRoleAuth`` / ``KubernetesAuth`` and ``auth_from_env``;
- ``VaultConnection.call`` — runs one hvac call, logs in on first use, tells an invalid token
  (``AuthenticationFailed``, after one fresh login for AppRole/Kubernetes) from a valid token
  without the policy (``PermissionDenied``, via ``lookup-self``), and translates every other
  hvac/requests error at the boundary.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import hvac
import hvac.exceptions as hv
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from rotation.errors import (
    AuthenticationFailed,
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    KeyturnError,
    PermissionDenied,
    SecretNotFound,
    Throttled,
    VersionConflict,
)
from rotation.names import validate_name

__all__ = [
    "AppRoleAuth",
    "KubernetesAuth",
    "TokenAuth",
    "VaultAuth",
    "VaultConnection",
    "auth_from_env",
    "build_session",
    "clean_path",
    "settings_from_env",
]

T = TypeVar("T")

DEFAULT_K8S_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_METHODS = frozenset({"GET", "HEAD", "LIST", "POST", "PUT", "PATCH", "DELETE"})
_FAILED = "Vault authentication failed: "
_TRUE = {"1", "t", "true", "yes", "on"}
_FALSE = {"0", "f", "false", "no", "off", ""}


def build_session(
    verify: bool | str = True, retries: int = 4, backoff: float = 0.2, backoff_max: float = 2.0
) -> requests.Session:
    """A pooled session retrying 429/5xx and dropped connections with backoff and jitter."""
    retry = Retry(
        total=retries,
        connect=min(retries, 3),
        read=retries,
        status=retries,
        other=0,
        allowed_methods=RETRY_METHODS,
        status_forcelist=RETRY_STATUSES,
        backoff_factor=backoff,
        backoff_max=backoff_max,
        backoff_jitter=backoff / 2,
        respect_retry_after_header=True,
        raise_on_status=False,  # the last 5xx reaches hvac, which names it
    )
    session = requests.Session()
    session.verify = verify
    adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=16)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class VaultAuth:
    """How the provider gets a token; ``login`` is None for a static token."""

    method = "token"
    #: What to check when Vault refuses the credentials (ends the error message).
    hint = ""

    def login(self, client: hvac.Client) -> dict[str, Any] | None:
        """A fresh login's ``auth`` block (``client_token``, ``lease_duration``, ``renewable``),
        or None when this method cannot log in again."""
        return None


@dataclass(frozen=True, repr=False)
class TokenAuth(VaultAuth):
    """A static token (``VAULT_TOKEN``)."""

    token: str
    method = "token"
    hint = (
        "check that VAULT_TOKEN is valid and not expired or revoked (`vault login`, "
        "`vault token lookup`) and that VAULT_ADDR points at the right server."
    )


@dataclass(frozen=True, repr=False)
class AppRoleAuth(VaultAuth):
    """AppRole login (``VAULT_ROLE_ID``, ``VAULT_SECRET_ID``, ``VAULT_APPROLE_MOUNT``)."""

    role_id: str
    secret_id: str | None = None
    mount: str = "approle"
    method = "approle"
    hint = (
        "check VAULT_ROLE_ID and VAULT_SECRET_ID (the secret id may have expired or used up its "
        "uses), VAULT_APPROLE_MOUNT, and that VAULT_ADDR points at the right server."
    )

    def login(self, client: hvac.Client) -> dict[str, Any] | None:
        answer = client.auth.approle.login(
            role_id=self.role_id, secret_id=self.secret_id, mount_point=self.mount, use_token=False
        )
        return dict(answer["auth"])


@dataclass(frozen=True, repr=False)
class KubernetesAuth(VaultAuth):
    """Kubernetes login with the pod's service-account token (``VAULT_ROLE``)."""

    role: str
    token_path: str = DEFAULT_K8S_TOKEN_PATH
    mount: str = "kubernetes"
    method = "kubernetes"
    hint = (
        "check VAULT_ROLE, the service-account token at VAULT_K8S_TOKEN_PATH, VAULT_K8S_MOUNT, "
        "and that VAULT_ADDR points at the right server."
    )

    def login(self, client: hvac.Client) -> dict[str, Any] | None:
        try:
            jwt = Path(self.token_path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AuthenticationFailed(
                f"{_FAILED}cannot read the Kubernetes service-account token at "
                f"{self.token_path} ({exc.strerror}); set VAULT_K8S_TOKEN_PATH."
            ) from exc
        answer = client.auth.kubernetes.login(
            role=self.role, jwt=jwt, mount_point=self.mount, use_token=False
        )
        return dict(answer["auth"])


def auth_from_env(environ: Mapping[str, str]) -> VaultAuth:
    """AppRole if ``VAULT_ROLE_ID`` is set, else Kubernetes if ``VAULT_ROLE``, else a token."""
    env = {k: v.strip() for k, v in environ.items() if k.startswith("VAULT_") and v.strip()}
    if "VAULT_ROLE_ID" in env:
        return AppRoleAuth(
            env["VAULT_ROLE_ID"],
            env.get("VAULT_SECRET_ID"),
            env.get("VAULT_APPROLE_MOUNT", "approle"),
        )
    if "VAULT_ROLE" in env:
        return KubernetesAuth(
            env["VAULT_ROLE"],
            env.get("VAULT_K8S_TOKEN_PATH", DEFAULT_K8S_TOKEN_PATH),
            env.get("VAULT_K8S_MOUNT", "kubernetes"),
        )
    if "VAULT_TOKEN" in env:
        return TokenAuth(env["VAULT_TOKEN"])
    raise ConfigurationError(
        "Vault credentials are not configured: set VAULT_TOKEN, or VAULT_ROLE_ID and "
        "VAULT_SECRET_ID (AppRole), or VAULT_ROLE (Kubernetes)."
    )


def settings_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """``VaultProvider`` arguments from ``VAULT_ADDR`` (required), the credentials
    (:func:`auth_from_env`), ``VAULT_MOUNT_POINT``, ``VAULT_PATH_PREFIX``, ``VAULT_CACERT``,
    ``VAULT_SKIP_VERIFY``, ``VAULT_NAMESPACE``, ``VAULT_CLIENT_TIMEOUT``, ``VAULT_MAX_RETRIES``."""
    address = (environ.get("VAULT_ADDR") or "").strip().rstrip("/")
    if not address:
        raise ConfigurationError(
            "VAULT_ADDR is not set: set it to the Vault server URL, "
            "e.g. VAULT_ADDR=https://vault.example.com:8200."
        )
    if not address.startswith(("http://", "https://")):
        raise ConfigurationError(
            f"VAULT_ADDR must start with http:// or https://, not {address!r}."
        )
    return {
        "address": address,
        "auth": auth_from_env(environ),
        "mount_point": environ.get("VAULT_MOUNT_POINT") or "secret",
        "path_prefix": environ.get("VAULT_PATH_PREFIX", ""),
        "verify": _verify_from_env(environ),
        "namespace": (environ.get("VAULT_NAMESPACE") or "").strip() or None,
        "timeout": _number(environ, "VAULT_CLIENT_TIMEOUT", 10.0),
        "retries": int(_number(environ, "VAULT_MAX_RETRIES", 4)),
    }


# --- configuration helpers --------------------------------------------------------------


def clean_path(variable: str, raw: str) -> str:
    path = raw.strip().strip("/")
    if not path:
        return ""
    try:
        validate_name(path)
    except Exception as exc:
        raise ConfigurationError(
            f"{variable}={raw!r} is not a usable KV path: use '/'-separated parts of letters, "
            "digits, '_', '.' and '-', none starting with '.'."
        ) from exc
    return path


def _verify_from_env(environ: Mapping[str, str]) -> bool | str:
    skip = (environ.get("VAULT_SKIP_VERIFY") or "").strip().lower()
    if skip not in _TRUE | _FALSE:
        raise ConfigurationError(f"VAULT_SKIP_VERIFY must be true or false, not {skip!r}.")
    if skip in _TRUE:
        return False
    cacert = (environ.get("VAULT_CACERT") or "").strip()
    if not cacert:
        return True
    if not Path(cacert).is_file():
        raise ConfigurationError(f"VAULT_CACERT={cacert!r} is not a readable CA bundle file.")
    return cacert


def _number(environ: Mapping[str, str], variable: str, default: float) -> float:
    raw = (environ.get(variable) or "").strip().removesuffix("s")
    if not raw:
        return default
    try:
        number = float(raw)
    except ValueError:
        number = -1.0
    if not number >= 0:
        raise ConfigurationError(f"{variable} must be a non-negative number, not {raw!r}.")
    return number


class VaultConnection:
    """One hvac client, its credentials and the translation of its errors."""

    def __init__(
        self,
        address: str,
        auth: VaultAuth,
        *,
        verify: bool | str = True,
        namespace: str | None = None,
        timeout: float = 10.0,
        retries: int = 4,
    ) -> None:
        self.address = address
        self.auth = auth
        self.session = build_session(verify, retries)
        self.client = hvac.Client(
            url=address,
            token=auth.token if isinstance(auth, TokenAuth) else "",
            verify=verify,
            timeout=(min(timeout, 5.0), timeout),
            namespace=namespace,
            session=self.session,
        )
        self._login_lock = threading.Lock()
        #: When to renew the token (monotonic clock); None: not renewable or not known yet.
        self._renew_at: float | None = None
        self._ttl = 0.0  # the longest TTL granted to the current token
        #: A static token's TTL is learnt with one lookup-self after the first success.
        self._lease_unknown = isinstance(auth, TokenAuth)

    def close(self) -> None:
        self.session.close()

    def call(self, operation: Callable[[hvac.Client], T], name: str | None = None) -> T:
        """Run ``operation``; log in again once if the token went stale; translate errors."""
        relogged = False
        while True:
            token = self._token()
            try:
                result = operation(self.client)
            except hv.Forbidden as exc:
                if self._token_is_valid():
                    raise PermissionDenied(
                        f"Permission denied by Vault at {self.address}"
                        + (f" for secret {name!r}" if name else "")
                        + ": the token is valid but its policies do not allow this; "
                        "grant the capability on the path (`vault token capabilities`) and "
                        "check VAULT_MOUNT_POINT and VAULT_PATH_PREFIX."
                    ) from exc
                if relogged or isinstance(self.auth, TokenAuth):
                    raise self._refused() from exc
                self._login(stale=token)
                relogged = True
                continue
            except (hv.VaultError, requests.RequestException) as exc:
                raise translate(exc, self.address, name) from exc
            if self._lease_unknown:
                self._learn_lease()
            return result

    def _token(self) -> str:
        token: str = self.client.token or ""
        if not token:
            return self._login(stale="")
        if self._renew_at is not None and time.monotonic() >= self._renew_at:
            self._renew(token)
        return str(self.client.token or token)

    def _schedule(self, ttl: object, renewable: object) -> None:
        """Renew at two thirds of a renewable token's TTL (0 means it never expires)."""
        seconds = float(ttl) if isinstance(ttl, int | float) else 0.0
        self._ttl = max(self._ttl, seconds)
        self._renew_at = time.monotonic() + seconds * 2 / 3 if renewable and seconds > 0 else None

    def _learn_lease(self) -> None:
        """``GET /v1/auth/token/lookup-self`` once, to know whether to renew a static token."""
        self._lease_unknown = False
        try:
            data = self.client.auth.token.lookup_self()["data"]
        except (hv.VaultError, requests.RequestException):
            return  # unknown: no renewal; a later 403 still says what to do
        self._schedule(data.get("ttl"), data.get("renewable"))

    def _renew(self, stale: str) -> None:
        """``POST /v1/auth/token/renew-self``; near its max TTL a login token logs in again."""
        with self._login_lock:
            if self.client.token != stale or self._renew_at is None:
                return
            if time.monotonic() < self._renew_at:
                return
            try:
                auth = self.client.auth.token.renew_self()["auth"]
            except hv.Forbidden:
                self._renew_at = None  # expired or revoked: the call's 403 handles it
                return
            except (hv.VaultError, requests.RequestException):
                self._renew_at = time.monotonic() + 5.0
                return
            if float(auth.get("lease_duration") or 0) < self._ttl / 2:
                self._renew_at = None  # capped by its max TTL: renewing further is futile
                if not isinstance(self.auth, TokenAuth):
                    self.client.token = ""  # the next call logs in afresh
                return
            self._schedule(auth.get("lease_duration"), auth.get("renewable"))

    def _login(self, stale: str) -> str:
        """Log in unless another thread already replaced the ``stale`` token."""
        with self._login_lock:
            if self.client.token and self.client.token != stale:
                return str(self.client.token)
            try:
                auth = self.auth.login(self.client)
            except hv.VaultError as exc:
                if isinstance(
                    exc, hv.InvalidRequest | hv.Forbidden | hv.Unauthorized | hv.InvalidPath
                ):
                    raise self._refused() from exc
                raise translate(exc, self.address, None) from exc
            except requests.RequestException as exc:
                raise translate(exc, self.address, None) from exc
            if auth is None:
                raise self._refused()
            token = str(auth["client_token"])
            self.client.token = token
            self._ttl = 0.0
            self._schedule(auth.get("lease_duration"), auth.get("renewable"))
            return token

    def _token_is_valid(self) -> bool:
        """``GET /v1/auth/token/lookup-self``: does Vault still accept our token?"""
        try:
            self.client.auth.token.lookup_self()
        except hv.Forbidden:
            return False
        except (hv.VaultError, requests.RequestException) as exc:
            raise translate(exc, self.address, None) from exc
        return True

    def _refused(self) -> AuthenticationFailed:
        return AuthenticationFailed(
            f"{_FAILED}Vault at {self.address} refused the {self.auth.method} credentials; "
            + self.auth.hint
        )


def translate(exc: BaseException, address: str, name: str | None) -> KeyturnError:
    """The Keyturn error for an hvac or requests error, most specific first."""
    if isinstance(exc, hv.InvalidPath):
        if "no handler for route" in str(exc.args[0] or ""):
            return BackendError(
                f"Vault at {address} has nothing mounted at that path: check VAULT_MOUNT_POINT "
                "names a KV v2 secrets engine (`vault secrets list`)."
            )
        return SecretNotFound(name or "?")
    if isinstance(exc, hv.InvalidRequest) and "check-and-set" in str(exc.args[0] or ""):
        return VersionConflict(
            f"Version conflict on {name!r}: another writer changed it first; "
            "read it again and retry."
        )
    if isinstance(exc, hv.Forbidden | hv.Unauthorized):
        return AuthenticationFailed(f"{_FAILED}Vault at {address} refused the request.")
    if isinstance(exc, hv.RateLimitExceeded):
        return Throttled(
            f"Vault at {address} is throttling requests (429, a rate limit quota) after retries."
        )
    unavailable = (
        hv.InternalServerError,
        hv.BadGateway,
        hv.VaultDown,
        hv.VaultNotInitialized,
    )
    if isinstance(exc, unavailable):
        return BackendUnavailable(
            f"Vault at {address} is unavailable ({type(exc).__name__}: sealed, down or "
            "throttling) after retries; retry later or check `vault status`."
        )
    if isinstance(exc, requests.exceptions.SSLError):
        return BackendError(
            f"TLS verification of Vault at {address} failed: set VAULT_CACERT to the CA bundle "
            "that signed the server certificate."
        )
    if isinstance(exc, requests.ConnectionError | requests.Timeout):
        return BackendUnavailable(
            f"Vault at {address} is unreachable or timing out ({type(exc).__name__}) after "
            "retries; check VAULT_ADDR and that the server is running."
        )
    if isinstance(exc, hv.VaultError):
        detail = "; ".join(str(e) for e in (exc.errors or []))[:300] or type(exc).__name__
        return BackendError(f"Vault at {address} refused the request: {detail}.")
    return BackendError(f"Request to Vault at {address} failed: {type(exc).__name__}.")
