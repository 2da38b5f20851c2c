"""The ``postgres`` rotator: PostgreSQL login credentials, single-user or alternating users.

Secret value: ``{"username", "password", "host", "port", "dbname"}`` (optionally ``sslmode``;
other fields are carried over). Policy ``target``: ``mode`` (``"alternating"``, the default,
or ``"single"``), ``admin_secret`` (required for alternating), ``users`` (the role pair;
default: the username without a ``_clone`` suffix, and that name + ``_clone``),
``connect_timeout`` (seconds, default 5), ``probe`` (one read-only statement the test step runs
as the new user, default ``SELECT 1``).

Every connection to the target sets ``statement_timeout`` (30 s) and ``lock_timeout`` (5 s),
each capped by what is left of the step's time budget, and is opened only while the worker
still holds the run's lease: an ``ALTER ROLE`` waiting on a lock gives up (retryably) instead
of outliving the lease.

Passwords never reach the server in clear text: ``ALTER ROLE`` gets the SCRAM verifier
computed client-side (libpq ``PQencryptPasswordConn``), so server logs and
``pg_stat_activity`` cannot show them. Error messages carry the SQLSTATE and the error class,
never the driver's text.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from rotation.errors import RotationError, SecretNotFound, TargetRejected
from rotation.generator import generate
from rotation.rotators.base import Capabilities, RotationContext, target_of
from rotation.rotators.postgres import grants
from rotation.rotators.postgres.target import PostgresTarget
from rotation.values import SecretValue, SecretVersion

__all__ = ["Credential", "PostgresRotator"]

#: SQLSTATE classes worth retrying: connection, resources, operator intervention (a statement
#: timeout is 57014), conflicts; and a lock timeout (55P03).
_RETRYABLE_CLASSES = ("08", "53", "57", "40", "55P03")
#: Upper bounds of one statement and of one lock wait on the target (seconds).
STATEMENT_TIMEOUT = 30.0
LOCK_TIMEOUT = 5.0
#: What libpq says when a login is refused, and the SQLSTATE the server sent with it.
_LOGIN_REFUSALS = {
    "password authentication failed": "28P01",
    "is not permitted to log in": "28000",
    "no pg_hba.conf entry": "28000",
    "does not exist": "3D000",
}


@dataclass(frozen=True)
class Credential:
    """A login read from a secret value (the password is kept out of ``repr``)."""

    username: str
    password: str = field(repr=False)
    host: str
    port: int
    dbname: str
    sslmode: str | None = None

    @classmethod
    def from_value(cls, value: SecretValue, what: str) -> Credential:
        if not isinstance(value, Mapping):
            raise RotationError(f"{what} must be a JSON object with username, password, host...")
        missing = [k for k in ("username", "password", "host", "dbname") if not value.get(k)]
        if missing:
            raise RotationError(f"{what} lacks {', '.join(missing)}.")
        try:
            port = int(value.get("port") or 5432)
        except (TypeError, ValueError):
            raise RotationError(f"{what} has a port that is not a number.") from None
        sslmode = value.get("sslmode")
        return cls(
            str(value["username"]),
            str(value["password"]),
            str(value["host"]),
            port,
            str(value["dbname"]),
            str(sslmode) if sslmode else None,
        )

    def where(self, dbname: str | None = None) -> str:
        return f"{self.host}:{self.port}/{dbname or self.dbname} as {self.username!r}"


def _refusal(exc: psycopg.Error, cred: Credential, dbname: str) -> TargetRejected:
    # libpq's text names no password, but it is driver text: only our own words go out
    text = str(exc)
    for needle, state in _LOGIN_REFUSALS.items():
        if needle in text:
            return TargetRejected(
                f"PostgreSQL refused the login at {cred.where(dbname)} (SQLSTATE {state}).",
                sqlstate=state,
            )
    state = exc.sqlstate or "08006"
    return TargetRejected(
        f"Cannot connect to PostgreSQL at {cred.where(dbname)}: {type(exc).__name__} "
        f"(SQLSTATE {state}); retry later.",
        retryable=True,
        sqlstate=state,
    )


def _sql_error(exc: psycopg.Error, action: str) -> TargetRejected:
    state = exc.sqlstate
    retryable = state is None or state.startswith(_RETRYABLE_CLASSES)
    return TargetRejected(
        f"PostgreSQL refused {action}: {type(exc).__name__} (SQLSTATE {state or 'unknown'}).",
        retryable=retryable,
        sqlstate=state,
    )


@contextmanager
def _session(
    cred: Credential, timeout: float, dbname: str | None = None, ctx: RotationContext | None = None
) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection with statement and lock timeouts, always closed; opened only
    while the step (``ctx``) still holds its lease."""
    database = dbname or cred.dbname
    options: dict[str, Any] = {"sslmode": cred.sslmode} if cred.sslmode else {}
    statement = ctx.time_left(STATEMENT_TIMEOUT) if ctx is not None else STATEMENT_TIMEOUT
    lock = min(LOCK_TIMEOUT, statement)
    if ctx is not None:
        ctx.check_lease()
        timeout = ctx.time_left(timeout)
    try:
        conn = psycopg.connect(
            host=cred.host,
            port=cred.port,
            user=cred.username,
            password=cred.password,
            dbname=database,
            connect_timeout=max(1, math.ceil(timeout)),
            autocommit=True,
            options=f"-c statement_timeout={int(statement * 1000)} "
            f"-c lock_timeout={int(lock * 1000)}",
            **options,
        )
    except psycopg.Error as exc:
        raise _refusal(exc, cred, database) from None
    with conn:
        yield conn


def _accepts(cred: Credential, timeout: float, ctx: RotationContext | None = None) -> bool:
    """Whether ``cred`` logs in; False on a refusal, raises when the server is unreachable."""
    try:
        with _session(cred, timeout, ctx=ctx) as conn:
            conn.execute("SELECT 1")
    except TargetRejected as exc:
        if exc.login_refused:
            return False
        raise
    return True


def _verifier(conn: psycopg.Connection[Any], role: str, password: str) -> str:
    """The password's verifier in the server's ``password_encryption`` format."""
    return conn.pgconn.encrypt_password(password.encode(), role.encode()).decode()


def _set_password(conn: psycopg.Connection[Any], role: str, password: str) -> None:
    try:
        conn.execute(
            # no attribute besides the password: a role may change its own password only
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(_verifier(conn, role, password))
            )
        )
    except psycopg.Error as exc:
        raise _sql_error(exc, f"the password change of role {role!r}") from None


def _role_exists(conn: psycopg.Connection[Any], role: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None


def _login_check(
    cred: Credential, timeout: float, probe: str, ctx: RotationContext | None = None
) -> None:
    """Log in, check who we are, then run the policy's probe in a read-only transaction that
    is rolled back (it proves what the application does works as this role)."""
    with _session(cred, timeout, ctx=ctx) as conn:
        try:
            row = conn.execute("SELECT current_user").fetchone()
        except psycopg.Error as exc:
            raise _sql_error(exc, "the login check") from None
        if row is None or row[0] != cred.username:
            raise TargetRejected(f"Logged in at {cred.where()} but as another role.")
        try:
            with conn.transaction(force_rollback=True):
                conn.execute("SET TRANSACTION READ ONLY")
                conn.execute(probe.encode(), prepare=False)
        except psycopg.Error as exc:
            raise _sql_error(exc, f"the probe as role {cred.username!r} (target.probe)") from None


#: Objects in the database owned by one of two roles (schemas, relations, functions, the
#: database): an owner's rights are implicit, so the other role cannot be given them by grants.
_OWNED = """
SELECT o.kind, o.name, r.rolname FROM (
    SELECT 'database' AS kind, d.datname::text AS name, d.datdba AS owner
    FROM pg_database d WHERE d.datname = current_database()
    UNION ALL
    SELECT 'schema', n.nspname::text, n.nspowner FROM pg_namespace n
    WHERE n.nspname NOT LIKE 'pg\\_%%' AND n.nspname <> 'information_schema'
    UNION ALL
    SELECT CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                          WHEN 'S' THEN 'sequence' WHEN 'f' THEN 'foreign table'
                          ELSE 'table' END,
           format('%%I.%%I', n.nspname, c.relname), c.relowner
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
      AND n.nspname NOT LIKE 'pg\\_%%' AND n.nspname <> 'information_schema'
    UNION ALL
    SELECT 'function', format('%%I.%%I', n.nspname, p.proname), p.proowner
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname NOT LIKE 'pg\\_%%' AND n.nspname <> 'information_schema'
) o JOIN pg_roles r ON r.oid = o.owner
WHERE r.rolname IN (%s, %s)
ORDER BY 3, 1, 2
"""


def _refuse_owned_objects(conn: psycopg.Connection[Any], active: str, inactive: str) -> None:
    """Alternating users cannot share what one of them owns: refuse, and say how to fix it."""
    try:
        owned = conn.execute(_OWNED, (active, inactive)).fetchall()
    except psycopg.Error as exc:
        raise _sql_error(exc, "the ownership check") from None
    if not owned:
        return
    owner = str(owned[0][2])
    other = inactive if owner == active else active
    mine = [f"{kind} {name}" for kind, name, role in owned if role == owner]
    listed = ", ".join(mine[:5])
    more = len(mine) - 5
    group = f"{active.removesuffix('_clone')}_owner"
    raise TargetRejected(
        f"Role {owner!r} owns {listed}{f' and {more} more' if more > 0 else ''} in database "
        f"{conn.info.dbname!r}: an owner's rights cannot be granted, so role {other!r} could "
        "not use them after a switch (SQLSTATE 42501). Let a group role own them, granted to "
        f"the users: CREATE ROLE {group} NOLOGIN; GRANT {group} TO {owner}; ALTER ... OWNER TO "
        f"{group} for each object (Keyturn mirrors the membership to {other!r}); then rotate "
        "again.",
        retryable=False,
    )


class PostgresRotator:
    """PostgreSQL credentials: ``single`` (one role, new password) or ``alternating`` (two
    roles taking turns, so the old credential keeps working until it is retired)."""

    kind = "postgres"
    Target = PostgresTarget
    #: Alternating users; a single user's old password stops working at apply.
    capabilities = Capabilities(dual_valid=True, revokes=True)

    @classmethod
    def capabilities_for(cls, target: PostgresTarget) -> Capabilities:
        return Capabilities(dual_valid=target.mode == "alternating", revokes=True)

    # --- the steps -------------------------------------------------------------------------

    def create(self, ctx: RotationContext, current: SecretValue) -> SecretValue:
        """Same host/port/dbname; the same role (single) or the other one (alternating)."""
        staged = _read(ctx, "pending")
        if staged is not None and staged.token == ctx.token:
            return staged.value
        target = target_of(ctx, PostgresTarget)
        cred = Credential.from_value(current, f"The current value of {ctx.secret!r}")
        assert isinstance(current, Mapping)  # checked by from_value
        username = cred.username if target.mode == "single" else target.other(cred.username)
        value = dict(current)
        value.update(username=username, password=generate(ctx.generator))
        return value

    def apply(self, ctx: RotationContext) -> None:
        """Make the database accept the new credential; the current one keeps working
        (alternating) or stops working (single: not zero-downtime)."""
        target = target_of(ctx, PostgresTarget)
        new, old = self._new_and_old(ctx)
        if target.mode == "single":
            self._apply_single(ctx, target, new, old)
        else:
            self._apply_alternating(ctx, target, new, old)

    def test(self, ctx: RotationContext) -> None:
        """Log in with the new credential and check who we are."""
        target = target_of(ctx, PostgresTarget)
        new, _ = self._new_and_old(ctx)
        _login_check(new, target.connect_timeout, target.probe, ctx)

    def retire(self, ctx: RotationContext, old: SecretValue) -> None:
        """Alternating: give the old role an unknown password (it stays, as the next
        rotation's inactive role). Single: nothing; the old password stopped at apply."""
        target = target_of(ctx, PostgresTarget)
        if target.mode == "single":
            return
        retired = Credential.from_value(old, f"The previous value of {ctx.secret!r}")
        current = Credential.from_value(ctx.current().value, f"The current value of {ctx.secret!r}")
        if retired.username == current.username:
            raise RotationError(
                f"Refusing to retire role {retired.username!r}: the current value of "
                f"{ctx.secret!r} uses it."
            )
        self._scramble(ctx, target, retired.username, current.dbname)

    def undo(self, ctx: RotationContext) -> None:
        """Make the database accept the CURRENT value again, and only it.

        The engine calls it before it discards this run's pending value (so a single user can
        log in with it), and after a rollback only once consumers confirmed they moved back."""
        target = target_of(ctx, PostgresTarget)
        current = Credential.from_value(ctx.current().value, f"The current value of {ctx.secret!r}")
        if _stage_token(ctx, "current") == ctx.token:
            raise RotationError(
                f"Undo of {ctx.secret!r} while this run's value is current: roll back first."
            )
        rolled_back = _stage_token(ctx, "previous") == ctx.token
        if target.mode == "single":
            self._undo_single(ctx, target, current, rolled_back)
        else:
            # the other role's new password (pending, or abandoned by a rollback) stops working
            self._scramble(ctx, target, target.other(current.username), current.dbname)

    # --- single user -----------------------------------------------------------------------

    def _apply_single(
        self, ctx: RotationContext, target: PostgresTarget, new: Credential, old: Credential
    ) -> None:
        timeout = target.connect_timeout
        if _accepts(new, timeout, ctx):
            return  # already applied
        candidates = [old]
        previous = _read(ctx, "previous")
        if previous is not None and previous.token != ctx.token:
            earlier = Credential.from_value(previous.value, "The previous value")
            if earlier != old:
                candidates.append(earlier)
        candidates += self._admin(ctx, target, new.dbname)
        self._set_via(candidates, timeout, new, ctx)

    def _undo_single(
        self, ctx: RotationContext, target: PostgresTarget, current: Credential, rolled_back: bool
    ) -> None:
        if _accepts(current, target.connect_timeout, ctx):
            return
        # the password the database holds now is this run's: log in with it (no admin needed)
        candidates = []
        mine = _read(ctx, "previous") if rolled_back else ctx.staged()
        if mine is not None:
            candidates.append(Credential.from_value(mine.value, "This run's value"))
        candidates += self._admin(ctx, target, current.dbname)
        self._set_via(candidates, target.connect_timeout, current, ctx)

    def _set_via(
        self, candidates: list[Credential], timeout: float, new: Credential, ctx: RotationContext
    ) -> None:
        """Set ``new``'s password through the first candidate login that works."""
        for login in candidates:
            try:
                with _session(login, timeout, ctx=ctx) as conn:
                    _set_password(conn, new.username, new.password)
                    return
            except TargetRejected as exc:
                if not exc.login_refused:
                    raise
        raise TargetRejected(
            f"No known password of role {new.username!r} logs in at {new.where()} and no "
            "admin_secret could: set the role's password by hand, or configure admin_secret."
        )

    # --- alternating users -----------------------------------------------------------------

    def _apply_alternating(
        self, ctx: RotationContext, target: PostgresTarget, new: Credential, old: Credential
    ) -> None:
        if target.other(old.username) != new.username:
            raise RotationError(
                f"The new value of {ctx.secret!r} must use role {target.other(old.username)!r}."
            )
        (admin,) = self._admin(ctx, target, new.dbname, required=True)
        if admin.username in (old.username, new.username):
            raise RotationError("The admin_secret's role must not be one of the rotated roles.")
        with _session(admin, target.connect_timeout, ctx=ctx) as conn:
            _refuse_owned_objects(conn, old.username, new.username)
            verifier = _verifier(conn, new.username, new.password)
            try:
                with conn.transaction():
                    self._sync(conn, old.username, new.username)
                    conn.execute(
                        sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
                            sql.Identifier(new.username), sql.Literal(verifier)
                        )
                    )
            except psycopg.Error as exc:
                raise _sql_error(exc, f"syncing role {new.username!r}") from None

    def _sync(self, conn: psycopg.Connection[Any], active: str, inactive: str) -> None:
        """Create ``inactive`` if missing and make its grants equal to ``active``'s."""
        source = grants.snapshot(conn, active)
        if source is None:
            raise TargetRejected(f"The active role {active!r} does not exist.")
        mirror = grants.snapshot(conn, inactive)
        if mirror is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(inactive)))
            mirror = grants.snapshot(conn, inactive)
            assert mirror is not None
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        statements, refused = grants.plan_sync(
            source, mirror, admin_is_superuser=bool(row and row[0])
        )
        if refused:
            raise TargetRejected(
                f"Role {inactive!r} would need {', '.join(refused)} to match {active!r}, which "
                "only a superuser admin may change: adjust the roles by hand or use a superuser "
                "admin_secret."
            )
        for statement in statements:
            conn.execute(statement)
        left = grants.differences(source, grants.snapshot(conn, inactive) or mirror)
        if left:
            raise TargetRejected(
                f"Role {inactive!r} still differs from {active!r} after the sync "
                f"({'; '.join(left[:5])}): check who granted those privileges."
            )

    def _scramble(self, ctx: RotationContext, target: PostgresTarget, role: str, db: str) -> None:
        """Give ``role`` a random password nobody knows (if the role exists)."""
        (admin,) = self._admin(ctx, target, db, required=True)
        if admin.username == role:
            raise RotationError("The admin_secret's role must not be one of the rotated roles.")
        with _session(admin, target.connect_timeout, ctx=ctx) as conn:
            if _role_exists(conn, role):
                _set_password(conn, role, secrets.token_urlsafe(48))

    # --- values ----------------------------------------------------------------------------

    def _new_and_old(self, ctx: RotationContext) -> tuple[Credential, Credential]:
        """This run's credential (pending, or current once promoted) and the one before it."""
        pending = _read(ctx, "pending")
        current = ctx.current()
        if pending is not None and pending.token == ctx.token:
            new, old = pending, current
        elif current.token == ctx.token:
            previous = _read(ctx, "previous")
            if previous is None:
                raise RotationError(f"{ctx.secret!r} has no previous version.")
            new, old = current, previous
        else:
            raise RotationError(
                f"No version of {ctx.secret!r} is staged under this run's token: run create first."
            )
        return (
            Credential.from_value(new.value, f"The new value of {ctx.secret!r}"),
            Credential.from_value(old.value, f"The old value of {ctx.secret!r}"),
        )

    def _admin(
        self, ctx: RotationContext, target: PostgresTarget, dbname: str, *, required: bool = False
    ) -> list[Credential]:
        """The admin credential (connecting to ``dbname``), or [] when none is configured."""
        if target.admin_secret is None or ctx.read_secret is None:
            if required:
                raise RotationError("This postgres rotation needs target.admin_secret.")
            return []
        value = ctx.read_secret(target.admin_secret)
        admin = Credential.from_value(value, f"The admin secret {target.admin_secret!r}")
        return [
            Credential(
                admin.username, admin.password, admin.host, admin.port, dbname, admin.sslmode
            )
        ]


def _read(ctx: RotationContext, stage: str) -> SecretVersion | None:
    try:
        if stage == "pending":
            return ctx.pending()
        return ctx.previous() if stage == "previous" else ctx.current()
    except SecretNotFound:
        return None


def _stage_token(ctx: RotationContext, stage: str) -> str | None:
    version = _read(ctx, stage)
    return version.token if version else None
