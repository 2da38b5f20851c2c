"""Binds and password changes against a directory, with errors translated at this boundary.

Passwords are changed with the password modify extended operation (RFC 3062), so the server
hashes them with its own scheme and applies its password policy. A message names the server,
the DN and the LDAP result, never a password nor the server's diagnostic text.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import ldap3
from ldap3.core.exceptions import LDAPException

from rotation.errors import RotationError, TargetRejected
from rotation.hosts import is_loopback
from rotation.values import SecretValue

__all__ = ["REFUSED", "Account", "Directory"]

#: A refused bind (LDAP invalidCredentials, 49), as a login refusal (SQLSTATE class 28).
REFUSED = "28000"


@dataclass(frozen=True)
class Account:
    """A bind DN with its password, at a directory URL; the password is kept out of ``repr``."""

    url: str
    bind_dn: str
    password: str = field(repr=False)

    @classmethod
    def from_value(cls, value: SecretValue, what: str, default_url: str | None = None) -> Account:
        """``value`` as an account; ``what`` names it in errors (never the value itself)."""
        if not isinstance(value, Mapping):
            raise RotationError(
                f"{what} must be a JSON object with url, bind_dn and password.", retryable=False
            )
        url = value.get("url") or default_url
        missing = [
            name
            for name, present in (
                ("url", url),
                ("bind_dn", value.get("bind_dn")),
                ("password", value.get("password")),
            )
            if not isinstance(present, str) or not present
        ]
        if missing:
            raise RotationError(f"{what} lacks {', '.join(missing)}.", retryable=False)
        assert isinstance(url, str)
        if not url.startswith(("ldap://", "ldaps://")):
            raise RotationError(
                f"{what} has a url that is neither ldap:// nor ldaps://.", retryable=False
            )
        return cls(url, str(value["bind_dn"]), str(value["password"]))

    def where(self) -> str:
        return f"{self.url} as {self.bind_dn!r}"


class Directory:
    """How to reach the directory: TLS settings and timeouts."""

    def __init__(
        self, *, start_tls: bool, ca_file: str | None, allow_plaintext: bool, timeout: float
    ) -> None:
        self.start_tls = start_tls
        self.ca_file = ca_file
        self.allow_plaintext = allow_plaintext
        self.timeout = timeout

    def _server(self, url: str) -> Any:
        parts = urlsplit(url)
        secure = parts.scheme == "ldaps"
        host = parts.hostname or ""
        if not (secure or self.start_tls or self.allow_plaintext or is_loopback(host)):
            raise TargetRejected(
                f"Refusing to send a password to {url} unencrypted: use ldaps://, "
                "target.start_tls, or (on a trusted network) target.allow_plaintext."
            )
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=self.ca_file)
        return ldap3.Server(
            host,
            port=parts.port or (636 if secure else 389),
            use_ssl=secure,
            tls=tls,
            get_info=ldap3.NONE,
            connect_timeout=self.timeout,
        )

    @contextmanager
    def bound(self, account: Account) -> Iterator[Any]:
        """A connection bound as ``account`` (:class:`TargetRejected` if refused); unbound after."""
        conn = self._open(account)
        try:
            if not conn.bind():
                raise _refusal(conn.result, account, "the bind")
            yield conn
        except LDAPException as exc:  # the connection broke or timed out
            raise TargetRejected(
                f"The directory at {account.url} did not answer ({type(exc).__name__}); retry "
                "later.",
                retryable=True,
            ) from None
        finally:
            _close(conn)

    def accepts(self, account: Account) -> bool:
        """Whether a simple bind as ``account`` succeeds (False when its password is refused)."""
        try:
            with self.bound(account) as conn:
                who = conn.extend.standard.who_am_i()
        except TargetRejected as exc:
            if exc.sqlstate == REFUSED:
                return False
            raise
        if who and _norm(str(who).removeprefix("dn:")) != _norm(account.bind_dn):
            raise TargetRejected(
                f"The directory at {account.url} says the bind as {account.bind_dn!r} is "
                f"{str(who)[:120]!r}."
            )
        return True

    def set_password(self, actor: Account, dn: str, new: str, *, old: str | None = None) -> None:
        """Bound as ``actor``, set ``dn``'s password to ``new`` (RFC 3062 password modify;
        ``old`` when an account changes its own)."""
        with self.bound(actor) as conn:
            own = _norm(dn) == _norm(actor.bind_dn)
            done = conn.extend.standard.modify_password(
                user=None if own else dn, old_password=old, new_password=new
            )
            if done is not True:
                raise _refusal(conn.result, actor, f"the password change of {dn!r}")

    def _open(self, account: Account) -> Any:
        server = self._server(account.url)
        conn = ldap3.Connection(
            server,
            user=account.bind_dn,
            password=account.password,
            auto_bind=ldap3.AUTO_BIND_NONE,
            receive_timeout=max(1, math.ceil(self.timeout)),  # ldap3 packs it as an int
            raise_exceptions=False,
            read_only=False,
        )
        try:
            conn.open()
            if self.start_tls and not server.ssl and not conn.start_tls():
                raise TargetRejected(
                    f"The directory at {account.url} refused StartTLS ({_result(conn.result)})."
                )
        except LDAPException as exc:
            _close(conn)
            raise TargetRejected(
                f"Cannot reach the directory at {account.url} ({type(exc).__name__}); retry later.",
                retryable=True,
            ) from None
        except BaseException:
            _close(conn)
            raise
        return conn


def _close(conn: Any) -> None:
    try:
        conn.unbind()
    except LDAPException:
        pass
    sock = getattr(conn, "socket", None)
    if sock is not None:  # ldap3 keeps the socket of a failed connect open
        with suppress(OSError):
            sock.close()


def _result(result: Mapping[str, Any] | None) -> str:
    result = result or {}
    return f"{result.get('description') or 'error'} ({result.get('result', '?')})"


#: LDAP result codes worth trying again: busy, unavailable, unwillingToPerform, timeLimit...
_RETRYABLE = {3, 51, 52, 53, 80}


def _refusal(result: Mapping[str, Any] | None, account: Account, action: str) -> TargetRejected:
    code = int((result or {}).get("result", 80) or 80)
    if code == 49:
        return TargetRejected(
            f"The directory refused the bind at {account.where()} (invalidCredentials).",
            sqlstate=REFUSED,
        )
    hint = ""
    if code == 19:
        hint = ": the server's password policy refused it (quality, history or minimum age)"
    elif code == 50:
        hint = ": the bind DN may not change that password (the directory's ACL)"
    return TargetRejected(
        f"The directory at {account.url} refused {action} as {account.bind_dn!r}: "
        f"{_result(result)}{hint}.",
        retryable=code in _RETRYABLE,
        sqlstate=str(code),
    )


def _norm(dn: str) -> str:
    return ",".join(part.strip().lower() for part in dn.split(","))
