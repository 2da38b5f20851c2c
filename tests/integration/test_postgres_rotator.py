"""The postgres rotator against a real, password-checking PostgreSQL (MemoryProvider backend).

Each test drives the steps in the engine's order: create -> stage_pending -> apply -> test ->
promote -> retire, and checks what the database accepts at every point.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from psycopg import sql

from rotation.errors import TargetRejected
from rotation.generator import GeneratorPolicy
from rotation.providers.memory import MemoryProvider
from rotation.rotators.base import RotationContext
from rotation.rotators.postgres.rotator import PostgresRotator
from rotation.values import Stage
from tests.backends.pgserver import PgDatabase

SECRET = "db/app"
ADMIN = "db/admin"
#: Symbols included: passwords with quotes and backslashes must survive literal quoting.
GENERATOR = GeneratorPolicy(length=24, classes={"lower": 2, "upper": 2, "digits": 2, "symbols": 4})


@dataclass
class Scenario:
    db: PgDatabase
    target: dict[str, Any]
    provider: MemoryProvider = field(default_factory=MemoryProvider)
    rotator: PostgresRotator = field(default_factory=PostgresRotator)

    def ctx(self, token: str) -> RotationContext:
        return RotationContext(
            secret=SECRET,
            provider=self.provider,
            token=token,
            generator=GENERATOR,
            target=self.target,
            read_secret=lambda name: self.provider.read(name).value,
        )

    def value(self, stage: Stage = Stage.CURRENT) -> dict[str, Any]:
        return dict(self.provider.read(SECRET, stage=stage).value)  # type: ignore[arg-type]

    def works(self, value: dict[str, Any]) -> bool:
        return self.db.accepts(value["username"], value["password"])

    def start(self, token: str, repeat: int = 1) -> RotationContext:
        """create (+ stage), apply and test, each ``repeat`` times."""
        ctx = self.ctx(token)
        for _ in range(repeat):
            value = self.rotator.create(ctx, self.provider.read(SECRET).value)
            self.provider.stage_pending(SECRET, value, token=token)
        for _ in range(repeat):
            self.rotator.apply(ctx)
        for _ in range(repeat):
            self.rotator.test(ctx)
        return ctx

    def finish(self, ctx: RotationContext, repeat: int = 1) -> None:
        """promote and retire, each ``repeat`` times."""
        for _ in range(repeat):
            self.provider.promote(SECRET, token=ctx.token)
        for _ in range(repeat):
            self.rotator.retire(ctx, self.value(Stage.PREVIOUS))


def admin_sql(db: PgDatabase, *statements: sql.Composable | str) -> None:
    with db.admin_connect() as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[call-overload]


def ident(*names: str) -> sql.Identifier:
    return sql.Identifier(*names)


def make_role(db: PgDatabase, role: str, password: str) -> None:
    db.track_role(role)
    admin_sql(
        db, sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(ident(role), sql.Literal(password))
    )


def rights(db: PgDatabase, role: str) -> dict[str, Any]:
    """What ``role`` may do, computed independently of the rotator's own catalog queries."""
    with db.admin_connect() as conn:
        tables = conn.execute(
            """SELECT c.oid, n.nspname || '.' || c.relname, c.relkind
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'app' ORDER BY 2"""
        ).fetchall()
        table_rights = {}
        for oid, name, kind in tables:
            privs = ("USAGE", "SELECT", "UPDATE") if kind == "S" else ("SELECT", "INSERT", "DELETE")
            check = "has_sequence_privilege" if kind == "S" else "has_table_privilege"
            table_rights[name] = [
                conn.execute(f"SELECT {check}(%s, %s, %s)", (role, oid, p)).fetchone()[0]  # type: ignore[index]
                for p in privs
            ]
        row = conn.execute(
            """SELECT rolinherit, rolcreatedb, rolcreaterole, rolconnlimit, rolsuper,
                      has_database_privilege(%(r)s, current_database(), 'CREATE'),
                      has_database_privilege(%(r)s, current_database(), 'TEMPORARY'),
                      has_schema_privilege(%(r)s, 'app', 'USAGE'),
                      has_schema_privilege(%(r)s, 'app', 'CREATE')
               FROM pg_roles WHERE rolname = %(r)s""",
            {"r": role},
        ).fetchone()
        members = conn.execute(
            """SELECT g.rolname, m.admin_option FROM pg_auth_members m
               JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member
               WHERE r.rolname = %s ORDER BY 1""",
            (role,),
        ).fetchall()
    return {"tables": table_rights, "role": row, "members": members}


@pytest.fixture
def alternating(pg_database: PgDatabase) -> Scenario:
    """Role ``app_<id>`` with memberships, attributes and privileges, current in the backend."""
    db = pg_database
    app, readers, auditors = db.role("app"), db.role("readers"), db.role("auditors")
    db.track_role(app + "_clone")
    make_role(db, app, "first-pass'word")
    admin_sql(
        db,
        sql.SQL("CREATE ROLE {} NOLOGIN").format(ident(readers)),
        sql.SQL("CREATE ROLE {} NOLOGIN").format(ident(auditors)),
        sql.SQL("GRANT {} TO {}").format(ident(readers), ident(app)),
        sql.SQL("GRANT {} TO {} WITH ADMIN OPTION").format(ident(auditors), ident(app)),
        sql.SQL("ALTER ROLE {} CREATEDB CONNECTION LIMIT 7").format(ident(app)),
        "CREATE SCHEMA app",
        "CREATE TABLE app.orders (id serial PRIMARY KEY, note text)",
        "CREATE TABLE app.audit (id int)",
        "CREATE VIEW app.recent AS SELECT * FROM app.orders",
        sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(ident(db.name), ident(app)),
        sql.SQL("GRANT USAGE ON SCHEMA app TO {}").format(ident(app)),
        sql.SQL("GRANT SELECT, INSERT ON app.orders TO {}").format(ident(app)),
        sql.SQL("GRANT SELECT ON app.audit TO {} WITH GRANT OPTION").format(ident(app)),
        sql.SQL("GRANT SELECT ON app.recent TO {}").format(ident(app)),
        sql.SQL("GRANT USAGE ON SEQUENCE app.orders_id_seq TO {}").format(ident(app)),
    )
    scenario = Scenario(db, {"mode": "alternating", "admin_secret": ADMIN, "connect_timeout": 3})
    scenario.provider.write(ADMIN, db.admin_secret)
    scenario.provider.write(SECRET, db.credential(app, "first-pass'word"))
    return scenario


@pytest.fixture
def single(pg_database: PgDatabase) -> Scenario:
    app = pg_database.role("solo")
    make_role(pg_database, app, "solo-first")
    scenario = Scenario(pg_database, {"mode": "single", "connect_timeout": 3})
    scenario.provider.write(SECRET, pg_database.credential(app, "solo-first"))
    return scenario


def test_single_user_rotation(single: Scenario) -> None:
    old = single.value()
    ctx = single.start("t1")
    new = single.value(Stage.PENDING)
    assert new["username"] == old["username"] and new["password"] != old["password"]
    assert single.works(new) and not single.works(old)  # single user: not zero-downtime
    single.finish(ctx)
    assert single.value() == new and single.works(new) and not single.works(old)


def test_single_user_steps_are_idempotent(single: Scenario) -> None:
    old = single.value()
    ctx = single.start("t1", repeat=3)
    single.finish(ctx, repeat=3)
    assert single.works(single.value()) and not single.works(old)
    assert len(single.provider.versions(SECRET)) == 2


def test_single_user_undo(single: Scenario) -> None:
    """After a rollback the old password comes back (via the rolled-back one); before promotion
    the discarded password is unknown, so without an admin the undo says so clearly."""
    old = single.value()
    ctx = single.start("t1")
    single.provider.promote(SECRET, token="t1")
    single.provider.rollback(SECRET, token="t1")
    single.rotator.undo(ctx)
    single.rotator.undo(ctx)
    assert single.works(old) and not single.works(single.value(Stage.PREVIOUS))

    ctx = single.start("t2")
    single.provider.discard_pending(SECRET, token="t2")
    with pytest.raises(TargetRejected, match="admin_secret") as info:
        single.rotator.undo(ctx)
    assert not info.value.retryable
    single.provider.write(ADMIN, single.db.admin_secret)
    single.target["admin_secret"] = ADMIN
    single.rotator.undo(ctx)
    assert single.works(old)


def test_single_user_undo_before_promotion_needs_no_admin(single: Scenario) -> None:
    """The engine undoes before it discards the pending value: a single user's undo logs in
    with this run's password (the one the database holds since apply), no admin needed."""
    old = single.value()
    ctx = single.start("t1")
    new = single.value(Stage.PENDING)
    assert single.works(new) and not single.works(old)
    single.rotator.undo(ctx)
    single.rotator.undo(ctx)
    assert single.works(old) and not single.works(new)


def test_alternating_refuses_a_role_that_owns_objects(alternating: Scenario) -> None:
    """Owner rights cannot be granted: the clone could not use a table the app role owns (the
    first SELECT after the switch fails with 42501). Apply refuses and says how to fix it."""
    s = alternating
    app = s.value()["username"]
    admin_sql(
        s.db,
        "CREATE TABLE app.own (id int)",
        sql.SQL("ALTER TABLE app.own OWNER TO {}").format(ident(app)),
    )
    ctx = s.ctx("t1")
    s.provider.stage_pending(SECRET, s.rotator.create(ctx, s.value()), token="t1")
    with pytest.raises(TargetRejected) as info:
        s.rotator.apply(ctx)
    message = info.value.message
    assert f"Role {app!r} owns table app.own" in message and "group role" in message
    assert f"GRANT {app}_owner TO {app}" in message and not info.value.retryable
    assert not s.works(s.value(Stage.PENDING))  # nothing applied
    # the fix the message gives: a group role owns the table, granted to the app role
    group = s.db.role("app_owner")
    admin_sql(
        s.db,
        sql.SQL("CREATE ROLE {} NOLOGIN").format(ident(group)),
        sql.SQL("GRANT {} TO {}").format(ident(group), ident(app)),
        sql.SQL("ALTER TABLE app.own OWNER TO {}").format(ident(group)),
    )
    s.rotator.apply(ctx)
    s.rotator.test(ctx)
    new = s.value(Stage.PENDING)
    with s.db.connect(new["username"], new["password"]) as conn:
        assert conn.execute("SELECT count(*) FROM app.own").fetchone() == (0,)


def test_test_runs_the_policy_probe_as_the_new_user(alternating: Scenario) -> None:
    """A column privilege is not mirrored: the probe the policy names catches it at ``test``,
    before promotion, instead of the application's first query after the switch."""
    s = alternating
    app = s.value()["username"]
    admin_sql(
        s.db,
        "CREATE TABLE app.customers (id int, email text)",
        sql.SQL("GRANT SELECT (id) ON app.customers TO {}").format(ident(app)),
    )
    with s.db.connect(app, "first-pass'word") as conn:  # the app role can
        conn.execute("SELECT id FROM app.customers LIMIT 1")
    s.target["probe"] = "SELECT id FROM app.customers LIMIT 1"
    ctx = s.ctx("t1")
    s.provider.stage_pending(SECRET, s.rotator.create(ctx, s.value()), token="t1")
    s.rotator.apply(ctx)
    with pytest.raises(TargetRejected) as info:
        s.rotator.test(ctx)
    assert "probe" in info.value.message and info.value.sqlstate == "42501"
    assert not info.value.retryable  # a permanent failure: the run rolls back before promotion
    s.target["probe"] = "SELECT 1 FROM app.orders LIMIT 1"  # what the clone may do passes
    s.rotator.test(ctx)


def test_alternating_three_rotations_with_drift(alternating: Scenario) -> None:
    s = alternating
    first = s.value()
    app, clone = first["username"], first["username"] + "_clone"
    readers = s.db.role("readers")
    for n in range(3):
        if n == 1:
            # drift on the role that is inactive now (app): an extra grant, a lost membership
            admin_sql(
                s.db,
                sql.SQL("GRANT DELETE ON app.orders TO {}").format(ident(app)),
                sql.SQL("REVOKE {} FROM {}").format(ident(readers), ident(app)),
            )
        if n == 2:
            # the active role (app) gains a privilege: the next inactive one must get it too
            admin_sql(s.db, sql.SQL("GRANT UPDATE ON app.orders_id_seq TO {}").format(ident(app)))
        old = s.value()
        ctx = s.start(f"t{n}")
        new = s.value(Stage.PENDING)
        assert new["username"] == (clone if n % 2 == 0 else app)
        assert {k: v for k, v in new.items() if k not in ("username", "password")} == {
            k: v for k, v in old.items() if k not in ("username", "password")
        }
        assert s.works(old) and s.works(new)
        s.provider.promote(SECRET, token=ctx.token)
        assert s.works(old) and s.works(new)  # dual-publish window
        assert rights(s.db, app) == rights(s.db, clone)
        s.rotator.retire(ctx, s.value(Stage.PREVIOUS))
        assert s.works(new) and not s.works(old)
    assert rights(s.db, app)["members"] == [(s.db.role("auditors"), True), (readers, False)]
    assert rights(s.db, app)["role"][:4] == (True, True, False, 7)


def test_alternating_steps_are_idempotent(alternating: Scenario) -> None:
    s = alternating
    old = s.value()
    ctx = s.start("t1", repeat=3)
    s.finish(ctx, repeat=3)
    new = s.value()
    assert s.works(new) and not s.works(old)
    assert rights(s.db, old["username"]) == rights(s.db, new["username"])
    assert len(s.provider.versions(SECRET)) == 2


def test_alternating_undo_before_promotion(alternating: Scenario) -> None:
    s = alternating
    current = s.value()
    ctx = s.start("t1")
    pending = s.value(Stage.PENDING)
    s.provider.discard_pending(SECRET, token="t1")
    s.rotator.undo(ctx)
    s.rotator.undo(ctx)
    assert s.works(current) and not s.works(pending)


def test_alternating_undo_after_rollback(alternating: Scenario) -> None:
    """The engine undoes after a rollback only once consumers moved back: the abandoned role's
    password stops working, so nobody can stay on it unnoticed."""
    s = alternating
    current = s.value()
    ctx = s.start("t1")
    s.provider.promote(SECRET, token="t1")
    s.provider.rollback(SECRET, token="t1")
    abandoned = s.value(Stage.PREVIOUS)
    s.rotator.undo(ctx)
    s.rotator.undo(ctx)
    assert s.value() == current and s.works(current) and not s.works(abandoned)
    # the next run re-uses the inactive role and gives it a fresh password
    ctx = s.start("t2")
    s.finish(ctx)
    assert s.works(s.value()) and not s.works(current)


def test_hostile_role_names_are_identifiers(pg_database: PgDatabase) -> None:
    db = pg_database
    victim = db.role("victim")
    hostile = f'app"; DROP ROLE {victim}; --'
    # the policy's `users` only takes plain role names; a hostile one can still arrive as the
    # username in the secret's value, and its alternate is derived from it
    clone = hostile + "_clone"
    db.track_role(clone)
    make_role(db, victim, "victim-pw")
    make_role(db, hostile, "it's \\ tricky")
    table = ident("app", "t'); DROP TABLE app.keep; --")
    admin_sql(
        db,
        "CREATE SCHEMA app",
        "CREATE TABLE app.keep (id int)",
        sql.SQL("CREATE TABLE {} (id int)").format(table),
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(ident(db.name), ident(hostile)),
        sql.SQL("GRANT USAGE ON SCHEMA app TO {}").format(ident(hostile)),
        sql.SQL("GRANT SELECT ON {} TO {}").format(table, ident(hostile)),
    )
    s = Scenario(db, {"mode": "alternating", "admin_secret": ADMIN})
    s.provider.write(ADMIN, db.admin_secret)
    s.provider.write(SECRET, db.credential(hostile, "it's \\ tricky"))
    ctx = s.start("t1")
    s.finish(ctx)
    assert s.value()["username"] == clone and s.works(s.value())
    assert db.accepts(victim, "victim-pw")
    assert rights(db, hostile) == rights(db, clone)
    assert rights(db, hostile)["tables"]["app.t'); DROP TABLE app.keep; --"][0] is True
    assert "app.keep" in rights(db, hostile)["tables"]


def test_errors_never_show_passwords(alternating: Scenario) -> None:
    s = alternating
    admin_password = s.db.server.admin_password
    ctx = s.ctx("t1")
    s.provider.stage_pending(SECRET, s.rotator.create(ctx, s.value()), token="t1")
    pending = s.value(Stage.PENDING)
    secrets_ = (admin_password, pending["password"], s.value()["password"])

    def check(exc: BaseException) -> None:
        assert not any(p in str(exc) for p in secrets_), str(exc)
        assert exc.__cause__ is None and exc.__suppress_context__

    # the pending role does not exist yet: login refused, not retryable
    with pytest.raises(TargetRejected) as refused:
        s.rotator.test(ctx)
    check(refused.value)
    assert refused.value.login_refused and not refused.value.retryable

    # a wrong admin password
    s.provider.write(ADMIN, {**s.db.admin_secret, "password": admin_password[::-1]})
    with pytest.raises(TargetRejected) as bad_admin:
        s.rotator.apply(ctx)
    check(bad_admin.value)
    assert "SQLSTATE 28P01" in str(bad_admin.value)

    # nothing listens on the port: retryable
    closed = {**s.db.admin_secret, "port": 1}
    s.provider.write(ADMIN, closed)
    with pytest.raises(TargetRejected) as unreachable:
        s.rotator.apply(ctx)
    check(unreachable.value)
    assert unreachable.value.retryable

    # an admin without the right to create roles: an SQL error, named by its SQLSTATE only
    weak = s.db.role("weak")
    make_role(s.db, weak, admin_password + "-weak")
    admin_sql(s.db, sql.SQL("GRANT {} TO {}").format(ident(s.value()["username"]), ident(weak)))
    s.provider.write(ADMIN, s.db.credential(weak, admin_password + "-weak"))
    with pytest.raises(TargetRejected) as denied:
        s.rotator.apply(ctx)
    check(denied.value)
    assert "SQLSTATE 42501" in str(denied.value) and not denied.value.retryable


def test_privileged_attributes_need_a_superuser_admin(alternating: Scenario) -> None:
    s = alternating
    app = s.value()["username"]
    manager = s.db.role("manager")
    make_role(s.db, manager, "manager-pw")
    admin_sql(
        s.db,
        sql.SQL("ALTER ROLE {} CREATEROLE").format(ident(manager)),
        sql.SQL("ALTER ROLE {} BYPASSRLS").format(ident(app)),
    )
    s.provider.write(ADMIN, s.db.credential(manager, "manager-pw"))
    with pytest.raises(TargetRejected, match="BYPASSRLS"):
        s.start("t1")
    s.provider.write(ADMIN, s.db.admin_secret)
    s.provider.discard_pending(SECRET, token="t1")
    s.finish(s.start(f"t{uuid.uuid4().hex}"))
    clone = s.value()["username"]
    with s.db.admin_connect() as conn:
        row = conn.execute("SELECT rolbypassrls FROM pg_roles WHERE rolname = %s", (clone,))
        assert row.fetchone() == (True,)
