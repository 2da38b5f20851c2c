"""The ``redis`` rotator: Redis 6+ ACL users, which may hold several passwords at once.

Secret value: ``{"username", "password", "host", "port"}`` (``username`` defaults to
``default``; other fields are carried over). Policy ``target``: ``admin_secret`` (a login of
the same shape allowed to run ``ACL SETUSER``), ``connect_timeout`` and ``persist``.

apply adds the new password to the user (``ACL SETUSER user #<sha256>``), so the old and the
new one both log in until retire removes the old one (``!<sha256>``). Passwords travel only as
SHA-256 hashes in ACL commands, never in clear. Error messages carry the error class and
Redis's error code, never the server's text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import redis
from pydantic import Field, field_validator

from rotation.errors import RotationError, TargetRejected
from rotation.rotators.base import Capabilities, RotationContext, run_versions, target_of
from rotation.rotators.login import Login, with_new_password
from rotation.schema import Spec, check_secret_name
from rotation.values import SecretValue

__all__ = ["RedisAclRotator", "RedisAclTarget"]

DEFAULT_PORT = 6379
#: The code Redis sends with a refused AUTH; mapped to a login refusal (SQLSTATE class 28).
_REFUSED = "28000"


class RedisAclTarget(Spec):
    """``redis``: add the new password to the ACL user, remove the old one at retire."""

    #: A login allowed to run ``ACL SETUSER`` / ``ACL GETUSER`` (and the persist command).
    admin_secret: str
    connect_timeout: float = Field(default=5, gt=0, le=300)
    #: Keep ACL changes across a server restart: ``auto`` runs ``ACL SAVE`` when the server has
    #: an ``aclfile``, else ``CONFIG REWRITE``; ``none`` leaves them in memory only.
    persist: Literal["auto", "acl_save", "config_rewrite", "none"] = "auto"

    @field_validator("admin_secret")
    @classmethod
    def _admin(cls, value: str) -> str:
        return check_secret_name(value)


def _digest(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def _code(exc: redis.RedisError) -> str:
    """Redis's error code (the first word of its reply: ERR, NOPERM, WRONGPASS...)."""
    text = str(exc).split(" ", 1)[0]
    return text if text.isupper() and text.isalpha() and len(text) <= 20 else "ERR"


def _error(exc: redis.RedisError, login: Login, action: str) -> TargetRejected:
    if isinstance(exc, redis.AuthenticationError):
        return TargetRejected(f"Redis refused the login at {login.where()}.", sqlstate=_REFUSED)
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return TargetRejected(
            f"Cannot reach Redis at {login.where()} for {action}: {type(exc).__name__}; "
            "retry later.",
            retryable=True,
        )
    return TargetRejected(
        f"Redis at {login.where()} refused {action}: {type(exc).__name__} ({_code(exc)}).",
        sqlstate=_code(exc),
    )


def _command(client: redis.Redis, *args: str) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


@contextmanager
def _client(login: Login, timeout: float) -> Iterator[redis.Redis]:
    """A client that logs in on first use and never retries on its own; always closed."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis(
        host=login.host,
        port=login.port,
        username=login.username,
        password=login.password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )
    try:
        yield client
    finally:
        client.close()


class RedisAclRotator:
    """Redis ACL users: two valid passwords during the dual window, the old one removed after."""

    kind = "redis"
    Target = RedisAclTarget
    capabilities = Capabilities(dual_valid=True, revokes=True)

    def create(self, ctx: RotationContext, current: SecretValue) -> SecretValue:
        staged = ctx.staged()
        if staged is not None:
            return staged.value
        self._login(current, f"The current value of {ctx.secret!r}")
        return with_new_password(current, ctx.generator)

    def apply(self, ctx: RotationContext) -> None:
        """Add the new password's hash to the user (adding it twice changes nothing)."""
        target = target_of(ctx, RedisAclTarget)
        new_version, old_version = run_versions(ctx)
        new = self._login(new_version.value, f"The new value of {ctx.secret!r}")
        old = self._login(old_version.value, f"The old value of {ctx.secret!r}")
        if new.username != old.username:
            raise RotationError(
                f"The new value of {ctx.secret!r} must keep user {old.username!r}.",
                retryable=False,
            )
        with self._admin(ctx, target, new) as (admin, login):
            self._passwords(admin, login, new.username)  # the user must exist
            self._setuser(admin, login, new.username, f"#{_digest(new.password)}")
            self._persist(admin, login, target)

    def test(self, ctx: RotationContext) -> None:
        """Log in with the new password on a fresh connection and ask who we are."""
        target = target_of(ctx, RedisAclTarget)
        new_version, _ = run_versions(ctx)
        new = self._login(new_version.value, f"The new value of {ctx.secret!r}")
        connection = redis.Connection(  # type: ignore[no-untyped-call]
            host=new.host,
            port=new.port,
            username=new.username,
            password=new.password,
            socket_timeout=target.connect_timeout,
            socket_connect_timeout=target.connect_timeout,
        )
        try:
            connection.connect()  # type: ignore[no-untyped-call]  # AUTH: refused raises here
        except redis.RedisError as exc:
            raise _error(exc, new, "the login") from None
        finally:
            connection.disconnect()  # type: ignore[no-untyped-call]

    def retire(self, ctx: RotationContext, old: SecretValue) -> None:
        """Remove the old password from the user (nothing when it is already gone)."""
        target = target_of(ctx, RedisAclTarget)
        retired = self._login(old, f"The previous value of {ctx.secret!r}")
        current = self._login(ctx.current().value, f"The current value of {ctx.secret!r}")
        if retired.username == current.username and retired.password == current.password:
            raise RotationError(
                f"Refusing to retire the password {ctx.secret!r} currently uses.", retryable=False
            )
        self._remove(ctx, target, retired)

    def undo(self, ctx: RotationContext) -> None:
        """Remove this run's password (pending, or rolled back); only CURRENT's stays."""
        target = target_of(ctx, RedisAclTarget)
        if ctx.current().token == ctx.token:
            raise RotationError(
                f"Undo of {ctx.secret!r} while this run's value is current: roll back first.",
                retryable=False,
            )
        mine = ctx.staged()
        if mine is None:
            previous = ctx.previous()
            mine = previous if previous is not None and previous.token == ctx.token else None
        if mine is None:
            return  # nothing of this run is readable any more: nothing was added
        current = self._login(ctx.current().value, f"The current value of {ctx.secret!r}")
        discarded = self._login(mine.value, f"This run's value of {ctx.secret!r}")
        if discarded.password != current.password:
            self._remove(ctx, target, discarded)

    # --- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _login(value: SecretValue, what: str) -> Login:
        return Login.from_value(value, what, default_port=DEFAULT_PORT, default_username="default")

    @contextmanager
    def _admin(
        self, ctx: RotationContext, target: RedisAclTarget, user: Login
    ) -> Iterator[tuple[redis.Redis, Login]]:
        value = ctx.secret_value(target.admin_secret)
        admin = self._login(value, f"The admin secret {target.admin_secret!r}")
        if admin.username == user.username:
            raise RotationError(
                "The admin_secret's user must not be the rotated user.", retryable=False
            )
        with _client(admin, target.connect_timeout) as client:
            yield client, admin

    def _remove(self, ctx: RotationContext, target: RedisAclTarget, login: Login) -> None:
        with self._admin(ctx, target, login) as (admin, admin_login):
            digest = _digest(login.password)
            if digest in self._passwords(admin, admin_login, login.username):
                self._setuser(admin, admin_login, login.username, f"!{digest}")
                self._persist(admin, admin_login, target)

    @staticmethod
    def _passwords(admin: redis.Redis, login: Login, user: str) -> list[str]:
        try:
            found: Any = _command(admin, "ACL", "GETUSER", user)
        except redis.RedisError as exc:
            raise _error(exc, login, f"ACL GETUSER {user!r}") from None
        if not found:
            raise TargetRejected(
                f"Redis at {login.host}:{login.port} has no ACL user {user!r}: create it first "
                "(ACL SETUSER or the aclfile).",
            )
        if isinstance(found, list):  # RESP2 without the client's parser: flat pairs
            found = dict(zip(found[::2], found[1::2], strict=False))
        return [str(p) for p in found.get("passwords", [])]

    @staticmethod
    def _setuser(admin: redis.Redis, login: Login, user: str, rule: str) -> None:
        try:
            _command(admin, "ACL", "SETUSER", user, rule)
        except redis.RedisError as exc:
            raise _error(exc, login, f"ACL SETUSER {user!r}") from None

    @staticmethod
    def _persist(admin: redis.Redis, login: Login, target: RedisAclTarget) -> None:
        mode = target.persist
        if mode == "none":
            return
        try:
            if mode == "auto":
                aclfile = admin.config_get("aclfile").get("aclfile")
                mode = "acl_save" if aclfile else "config_rewrite"
            if mode == "acl_save":
                _command(admin, "ACL", "SAVE")
            else:
                _command(admin, "CONFIG", "REWRITE")
        except redis.RedisError as exc:
            raise TargetRejected(
                f"Redis at {login.host}:{login.port} could not persist the ACL change "
                f"({mode}: {_code(exc)}); the change is live but would not survive a restart: "
                "fix the server's aclfile/config file, or set target.persist.",
            ) from None
