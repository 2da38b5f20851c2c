"""Who may look: basic auth (users from a file or the environment) or a trusted reverse proxy's
header. The dashboard refuses to start with neither, unless told ``--insecure-no-auth`` on a
loopback address.

Every request but ``/healthz`` (which answers ``ok`` and nothing else) needs credentials; every
response carries headers that keep pages out of caches and frames and forbid scripts.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rotation.config import DashboardSettings
from rotation.errors import ConfigurationError
from rotation.hosts import is_loopback

__all__ = [
    "OPEN_PATHS",
    "SECURITY_HEADERS",
    "AuthPolicy",
    "RequireAuth",
    "SecurityHeaders",
    "parse_users",
]

#: Paths answered without credentials; they carry no data.
OPEN_PATHS = frozenset({"/healthz"})

SECURITY_HEADERS = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "content-security-policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'none'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}

#: Compared against when the user is unknown, so a wrong user costs what a wrong password does.
_DUMMY = "x" * 32


def parse_users(text: str, source: str, separator: str) -> dict[str, str]:
    """``user:password`` entries split by ``separator``; errors name the entry, never a password."""
    users: dict[str, str] = {}
    for number, entry in enumerate(text.split(separator), start=1):
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        user, colon, password = entry.partition(":")
        if not colon or not user or not password:
            raise ConfigurationError(
                f"{source}: entry {number} is not user:password (a user and a non-empty password)."
            )
        if user in users:
            raise ConfigurationError(f"{source}: user {user!r} is listed twice.")
        users[user] = password
    return users


def _read_auth_file(path: str) -> dict[str, str]:
    file = Path(path)
    try:
        mode = file.stat().st_mode
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the dashboard's auth file {path}: {exc.strerror or exc}"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(
            f"the dashboard's auth file {path} is readable by others (mode "
            f"{stat.S_IMODE(mode):o}): chmod 600 {path}"
        )
    return parse_users(text, str(path), "\n")


@dataclass(frozen=True)
class AuthPolicy:
    """Basic-auth users, a trusted proxy header, or (local use only) nobody checked."""

    users: Mapping[str, str] = field(default_factory=dict)
    proxy_header: str | None = None
    trusted_proxies: frozenset[str] = frozenset({"127.0.0.1", "::1"})
    insecure: bool = False

    @classmethod
    def from_settings(
        cls,
        settings: DashboardSettings,
        *,
        host: str,
        insecure: bool = False,
        auth_file: str | None = None,
        proxy_header: str | None = None,
    ) -> AuthPolicy:
        """From the settings (command-line values win); refuses to run unauthenticated."""
        users: dict[str, str] = {}
        if settings.basic_auth:
            users.update(
                parse_users(settings.basic_auth, "KEYTURN_DASHBOARD_BASIC_AUTH", separator=",")
            )
        path = auth_file or settings.auth_file
        if path:
            for user, password in _read_auth_file(os.fspath(path)).items():
                users.setdefault(user, password)
        header = proxy_header or settings.proxy_header
        if insecure and (users or header):
            raise ConfigurationError(
                "--insecure-no-auth was given, but authentication is configured too; drop one."
            )
        if insecure and not is_loopback(host):
            raise ConfigurationError(
                f"--insecure-no-auth only binds a loopback address (127.0.0.1), not {host}: "
                "configure basic auth or a trusted proxy header for anything else."
            )
        if not (users or header or insecure):
            raise ConfigurationError(
                "the dashboard needs authentication: set "
                "KEYTURN_DASHBOARD_BASIC_AUTH=user:password or --auth-file FILE, or "
                "--proxy-header NAME behind an authenticating proxy "
                "(--insecure-no-auth for a look on 127.0.0.1 only)."
            )
        return cls(users, header, frozenset(settings.trusted_proxies), insecure)

    def describe(self) -> str:
        """What protects the dashboard, for its start-up line."""
        parts = []
        if self.users:
            parts.append(f"basic auth ({len(self.users)} user{'s' if len(self.users) > 1 else ''})")
        if self.proxy_header:
            parts.append(f"{self.proxy_header} from {', '.join(sorted(self.trusted_proxies))}")
        return " or ".join(parts) or "NO AUTHENTICATION (--insecure-no-auth)"

    def authenticate(self, headers: Headers, client: str | None) -> str | None:
        """The user a request comes from, or None."""
        if self.insecure:
            return "anonymous"
        if self.proxy_header and client in self.trusted_proxies:
            user = headers.get(self.proxy_header, "").strip()
            if user:
                return user
        if self.users:
            return self._basic(headers.get("authorization", ""))
        return None

    def _basic(self, header: str) -> str | None:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, colon, password = decoded.partition(":")
        if not colon:
            return None
        expected = self.users.get(user)
        same = hmac.compare_digest(
            password.encode("utf-8"), (expected if expected is not None else _DUMMY).encode()
        )
        return user if same and expected is not None else None


class RequireAuth:
    """ASGI middleware: no credentials, no data (401, with a basic-auth challenge if enabled)."""

    def __init__(self, app: ASGIApp, policy: AuthPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        user = self.policy.authenticate(Headers(scope=scope), client[0] if client else None)
        if user is None:
            challenge = (
                {"WWW-Authenticate": 'Basic realm="keyturn", charset="UTF-8"'}
                if self.policy.users
                else {}
            )
            response = PlainTextResponse("authentication required\n", 401, headers=challenge)
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["user"] = user
        await self.app(scope, receive, send)


class SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, with_headers)
