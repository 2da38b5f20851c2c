"""The ``mysql`` rotator: MySQL and MariaDB accounts, single-user or alternating users.

Secret value: ``{"username", "password", "host", "port", "dbname"}`` (``port`` defaults to
3306, ``dbname`` is optional; other fields are carried over). Policy ``target``: ``mode``
(``"alternating"``, the default, or ``"single"``), ``admin_secret`` (required for
alternating), ``users`` (default: the username without a ``_clone`` suffix, and that name +
``_clone``), ``account_host`` (default ``%``) and ``connect_timeout``.

MariaDB has no dual passwords, so the zero-downtime mode alternates between two accounts, as
the ``postgres`` kind does. Account names and passwords are driver parameters, never
formatted into SQL. On MariaDB the password reaches the server only as its
``mysql_native_password`` hash, computed client-side; MySQL gets ``IDENTIFIED BY`` (it masks
the password in its own logs). Error messages carry the server's error number and the error
class, never the driver's text.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pymysql

from rotation.errors import RotationError, TargetRejected
from rotation.rotators.base import Capabilities, RotationContext, run_versions, target_of
from rotation.rotators.login import Login, with_new_password
from rotation.rotators.mysql import grants
from rotation.rotators.mysql.target import MySqlTarget
from rotation.values import SecretValue

__all__ = ["MySqlRotator"]

DEFAULT_PORT = 3306
#: Server errors that refuse a login: access denied, to the database, by plugin, locked.
_LOGIN_REFUSED = {1044, 1045, 1698, 3118, 4151}
#: Errors worth retrying: cannot connect, gone away, lost, too many connections, lock wait,
#: deadlock, shutdown in progress.
_RETRYABLE = {1040, 1053, 1205, 1213, 2002, 2003, 2006, 2013}
#: The SQLSTATE of a refused login (``TargetRejected.login_refused``).
_REFUSED = "28000"


def _number(exc: pymysql.err.MySQLError) -> int | None:
    return exc.args[0] if exc.args and isinstance(exc.args[0], int) else None


def _failure(exc: pymysql.err.MySQLError, where: str, action: str) -> TargetRejected:
    number = _number(exc)
    if number in _LOGIN_REFUSED:
        return TargetRejected(
            f"MySQL refused the login at {where} (error {number}).", sqlstate=_REFUSED
        )
    retryable = number in _RETRYABLE or number is None
    hint = "; retry later" if retryable else ""
    return TargetRejected(
        f"MySQL at {where} failed {action}: {type(exc).__name__} (error {number}){hint}.",
        retryable=retryable,
        sqlstate=str(number) if number is not None else None,
    )


def native_hash(password: str) -> str:
    """The ``mysql_native_password`` hash: ``*`` + upper-case hex SHA1(SHA1(password))."""
    return "*" + hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest().upper()


class _Session:
    """An autocommit connection, its server flavour, and statements translated at the
    boundary."""

    def __init__(self, conn: Any, login: Login) -> None:
        self.conn = conn
        self.login = login
        self.cur = conn.cursor()
        version = self.one("SELECT VERSION()")
        self.mariadb = "mariadb" in str(version).lower()

    def run(self, statement: str, params: tuple[Any, ...] = (), action: str = "") -> None:
        try:
            self.cur.execute(statement, params)
        except pymysql.err.MySQLError as exc:
            raise _failure(exc, self.login.where(), action or "a statement") from None

    def one(self, statement: str, params: tuple[Any, ...] = ()) -> Any:
        self.run(statement, params, "a query")
        row = self.cur.fetchone()
        return row[0] if row else None

    def set_password(self, account: grants.Account, password: str, *, own: bool) -> None:
        """Set ``account``'s password (``own``: the session is that account itself)."""
        what = f"the password change of {account}"
        if self.mariadb and own:
            self.run("SET PASSWORD = %s", (native_hash(password),), what)
        elif self.mariadb:
            self.run(
                "ALTER USER %s@%s IDENTIFIED BY PASSWORD %s",
                (*account.params, native_hash(password)),
                what,
            )
        elif own:
            self.run("ALTER USER CURRENT_USER() IDENTIFIED BY %s", (password,), what)
        else:
            self.run("ALTER USER %s@%s IDENTIFIED BY %s", (*account.params, password), what)

    def exists(self, account: grants.Account) -> bool:
        found = self.one(
            "SELECT COUNT(*) FROM mysql.user WHERE User = %s AND Host = %s", account.params
        )
        return bool(found)


@contextmanager
def _session(login: Login, timeout: float) -> Iterator[_Session]:
    """An autocommit session as ``login``, always closed."""
    seconds = max(1, math.ceil(timeout))
    try:
        conn = pymysql.connect(
            host=login.host,
            port=login.port,
            user=login.username,
            password=login.password,
            database=login.database,
            connect_timeout=seconds,
            read_timeout=seconds * 6,
            write_timeout=seconds * 6,
            autocommit=True,
            charset="utf8mb4",
        )
    except pymysql.err.MySQLError as exc:
        raise _failure(exc, login.where(), "the login") from None
    try:
        yield _Session(conn, login)
    finally:
        conn.close()


def _accepts(login: Login, timeout: float) -> bool:
    """Whether ``login`` logs in; False on a refusal, raises when the server is unreachable."""
    try:
        with _session(login, timeout):
            return True
    except TargetRejected as exc:
        if exc.login_refused:
            return False
        raise


class MySqlRotator:
    """MySQL/MariaDB accounts: ``single`` (one account, new password) or ``alternating`` (two
    accounts taking turns, so the old credential keeps working until it is retired)."""

    kind = "mysql"
    Target = MySqlTarget
    capabilities = Capabilities(dual_valid=True, revokes=True)

    @classmethod
    def capabilities_for(cls, target: MySqlTarget) -> Capabilities:
        return Capabilities(dual_valid=target.mode == "alternating", revokes=True)

    # --- the steps -------------------------------------------------------------------------

    def create(self, ctx: RotationContext, current: SecretValue) -> SecretValue:
        """Same host/port/dbname; the same account (single) or the other one (alternating)."""
        staged = ctx.staged()
        if staged is not None:
            return staged.value
        target = target_of(ctx, MySqlTarget)
        login = self._login(current, f"The current value of {ctx.secret!r}")
        username = None if target.mode == "single" else target.other(login.username)
        return with_new_password(current, ctx.generator, username)

    def apply(self, ctx: RotationContext) -> None:
        target = target_of(ctx, MySqlTarget)
        new, old = self._new_and_old(ctx)
        if target.mode == "single":
            self._apply_single(ctx, target, new, old)
        else:
            self._apply_alternating(ctx, target, new, old)

    def test(self, ctx: RotationContext) -> None:
        """Log in with the new credential and check who we are."""
        target = target_of(ctx, MySqlTarget)
        new, _ = self._new_and_old(ctx)
        with _session(new, target.connect_timeout) as session:
            who = str(session.one("SELECT CURRENT_USER()") or "")
        if who.rpartition("@")[0] != new.username:
            raise TargetRejected(f"Logged in at {new.where()} but as another account.")

    def retire(self, ctx: RotationContext, old: SecretValue) -> None:
        """Alternating: give the old account a password nobody knows (it stays, as the next
        rotation's inactive account). Single: nothing; the old password stopped at apply."""
        target = target_of(ctx, MySqlTarget)
        if target.mode == "single":
            return
        retired = self._login(old, f"The previous value of {ctx.secret!r}")
        current = self._login(ctx.current().value, f"The current value of {ctx.secret!r}")
        if retired.username == current.username:
            raise RotationError(
                f"Refusing to retire user {retired.username!r}: the current value of "
                f"{ctx.secret!r} uses it.",
                retryable=False,
            )
        self._scramble(ctx, target, retired.username, current)

    def undo(self, ctx: RotationContext) -> None:
        """Make the server accept the CURRENT value again, and only it."""
        target = target_of(ctx, MySqlTarget)
        current_version = ctx.current()
        if current_version.token == ctx.token:
            raise RotationError(
                f"Undo of {ctx.secret!r} while this run's value is current: roll back first.",
                retryable=False,
            )
        current = self._login(current_version.value, f"The current value of {ctx.secret!r}")
        previous = ctx.previous()
        rolled_back = previous is not None and previous.token == ctx.token
        if target.mode == "single":
            self._undo_single(ctx, target, current, rolled_back)
        else:
            # the other account's new password (pending, or abandoned by a rollback: the engine
            # undoes that only once consumers moved back) stops working
            self._scramble(ctx, target, target.other(current.username), current)

    # --- single user -----------------------------------------------------------------------

    def _apply_single(
        self, ctx: RotationContext, target: MySqlTarget, new: Login, old: Login
    ) -> None:
        if _accepts(new, target.connect_timeout):
            return  # already applied
        candidates = [old]
        previous = ctx.previous()
        if previous is not None and previous.token != ctx.token:
            earlier = self._login(previous.value, "The previous value")
            if earlier != old:
                candidates.append(earlier)
        candidates += self._admin(ctx, target, new)
        self._set_via(candidates, target, new)

    def _undo_single(
        self, ctx: RotationContext, target: MySqlTarget, current: Login, rolled_back: bool
    ) -> None:
        if _accepts(current, target.connect_timeout):
            return
        # the password the server holds now is this run's (the engine undoes before it
        # discards the pending value): log in with it, no admin needed
        candidates: list[Login] = []
        mine = ctx.previous() if rolled_back else ctx.staged()
        if mine is not None:
            candidates.append(self._login(mine.value, "This run's value"))
        candidates += self._admin(ctx, target, current)
        self._set_via(candidates, target, current)

    def _set_via(self, candidates: list[Login], target: MySqlTarget, new: Login) -> None:
        """Set ``new``'s password through the first candidate login that works."""
        account = grants.Account(new.username, target.account_host)
        for login in candidates:
            try:
                with _session(login, target.connect_timeout) as session:
                    session.set_password(account, new.password, own=login.username == new.username)
                    return
            except TargetRejected as exc:
                if not exc.login_refused:
                    raise
        raise TargetRejected(
            f"No known password of user {new.username!r} logs in at {new.host}:{new.port} and "
            "no admin_secret could: set the password by hand, or configure admin_secret."
        )

    # --- alternating users -----------------------------------------------------------------

    def _apply_alternating(
        self, ctx: RotationContext, target: MySqlTarget, new: Login, old: Login
    ) -> None:
        if target.other(old.username) != new.username:
            raise RotationError(
                f"The new value of {ctx.secret!r} must use user {target.other(old.username)!r}.",
                retryable=False,
            )
        (admin,) = self._admin(ctx, target, new, required=True)
        active = grants.Account(old.username, target.account_host)
        inactive = grants.Account(new.username, target.account_host)
        with _session(admin, target.connect_timeout) as session:
            if not session.exists(active):
                raise TargetRejected(f"The active account {active} does not exist.")
            if not session.exists(inactive):
                # created with a password nobody knows: it logs in only once fully synced
                session.run(
                    "CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s",
                    (*inactive.params, secrets.token_urlsafe(32)),
                    f"creating {inactive}",
                )
            self._sync(session, active, inactive)
            session.set_password(inactive, new.password, own=False)

    def _sync(self, session: _Session, active: grants.Account, inactive: grants.Account) -> None:
        """Make ``inactive``'s privileges equal to ``active``'s; refuse what cannot be copied."""
        if not session.mariadb:
            for account in (active, inactive):
                if grants.mysql_roles(session.cur, account):
                    raise TargetRejected(
                        f"{account} has MySQL roles, which this rotator does not mirror: "
                        "grant the privileges directly, or rotate it in single mode."
                    )
        source = grants.snapshot(session.cur, active, mariadb=session.mariadb)
        mirror = grants.snapshot(session.cur, inactive, mariadb=session.mariadb)
        for statement, params in grants.plan_sync(source, mirror):
            session.run(statement, params, f"syncing the privileges of {inactive}")
        left = grants.differences(
            source, grants.snapshot(session.cur, inactive, mariadb=session.mariadb)
        )
        if left:
            raise TargetRejected(
                f"{inactive} still differs from {active} after the sync "
                f"({'; '.join(left[:5])}): check the admin's own privileges."
            )

    def _scramble(self, ctx: RotationContext, target: MySqlTarget, user: str, near: Login) -> None:
        """Give ``user`` a random password nobody knows (if the account exists)."""
        (admin,) = self._admin(ctx, target, near, required=True)
        if admin.username == user:
            raise RotationError(
                "The admin_secret's user must not be one of the rotated users.", retryable=False
            )
        account = grants.Account(user, target.account_host)
        with _session(admin, target.connect_timeout) as session:
            if session.exists(account):
                session.set_password(account, secrets.token_urlsafe(48), own=False)

    # --- values ----------------------------------------------------------------------------

    @staticmethod
    def _login(value: SecretValue, what: str) -> Login:
        return Login.from_value(value, what, default_port=DEFAULT_PORT)

    def _new_and_old(self, ctx: RotationContext) -> tuple[Login, Login]:
        new, old = run_versions(ctx)
        return (
            self._login(new.value, f"The new value of {ctx.secret!r}"),
            self._login(old.value, f"The old value of {ctx.secret!r}"),
        )

    def _admin(
        self, ctx: RotationContext, target: MySqlTarget, near: Login, *, required: bool = False
    ) -> list[Login]:
        """The admin login (no default database), or [] when none is configured."""
        if target.admin_secret is None:
            if required:
                raise RotationError(
                    "This mysql rotation needs target.admin_secret.", retryable=False
                )
            return []
        value = ctx.secret_value(target.admin_secret)
        admin = self._login(value, f"The admin secret {target.admin_secret!r}").using(database=None)
        if admin.username in target.pair(near.username) and target.mode == "alternating":
            raise RotationError(
                "The admin_secret's user must not be one of the rotated users.", retryable=False
            )
        return [admin]
