"""The ``mysql`` kind against a real MariaDB, beyond the contract: privileges mirrored onto the
alternate account exactly (drift corrected, extras revoked), hostile names, and passwords that
never reach the server's log."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from rotation.errors import TargetRejected
from rotation.providers.memory import MemoryProvider
from rotation.rotators.mysql import grants
from rotation.run.states import RunState
from tests.backends.mariadb import MariaDbDatabase, quote_identifier
from tests.contract.harness import Rotation, Subject

q = quote_identifier


def grants_of(db: MariaDbDatabase, user: str) -> list[str]:
    """``SHOW GRANTS`` with the account name and password hash taken out, for comparing."""
    with db.admin_connect() as conn, conn.cursor() as cur:
        cur.execute("SHOW GRANTS FOR %s@'%%'", (user,))
        rows = [row[0] for row in cur.fetchall()]
        cur.execute("SELECT default_role FROM mysql.user WHERE User = %s", (user,))
        default = cur.fetchone()[0]
    return sorted(
        [r.replace(f"`{user}`@`%`", "<account>").split(" IDENTIFIED BY")[0] for r in rows]
        + [f"default role {default}"]
    )


def subject(db: MariaDbDatabase, user: str, password: str) -> Subject:
    provider = MemoryProvider()
    provider.write("db/admin", db.admin_secret)
    result = Subject(
        "mysql",
        "mysql",
        {"mode": "alternating", "admin_secret": "db/admin", "connect_timeout": 3},
        provider,
        lambda v: db.accepts(v["username"], v["password"]),  # type: ignore[index]
    )
    provider.write(result.secret, db.credential(user, password))
    return result


def admin(db: MariaDbDatabase, *statements: tuple[str, tuple[Any, ...]] | str) -> None:
    with db.admin_connect() as conn, conn.cursor() as cur:
        for statement in statements:
            text, params = (statement, ()) if isinstance(statement, str) else statement
            cur.execute(text, params)


def test_privileges_are_mirrored_exactly_at_every_rotation(
    mariadb_database: MariaDbDatabase,
) -> None:
    db = mariadb_database
    user, clone = db.user("app"), db.user("app") + "_clone"
    db.track_user(clone)
    role = f"reader_{uuid.uuid4().hex[:6]}"
    d = q(db.name)
    admin(
        db,
        ("CREATE USER %s@'%%' IDENTIFIED BY 'pw-1'", (user,)),
        f"CREATE TABLE {d}.orders (id int, note text)",
        f"CREATE TABLE {d}.audit (id int)",
        f"CREATE ROLE {role}",
        (f"GRANT SELECT, INSERT ON {d}.* TO %s@'%%'", (user,)),
        (f"GRANT UPDATE, DELETE ON {d}.orders TO %s@'%%' WITH GRANT OPTION", (user,)),
        (f"GRANT SELECT (id) ON {d}.audit TO %s@'%%'", (user,)),
        ("GRANT PROCESS ON *.* TO %s@'%%'", (user,)),
        (f"GRANT {role} TO %s@'%%' WITH ADMIN OPTION", (user,)),
        (f"SET DEFAULT ROLE {role} FOR %s@'%%'", (user,)),
    )
    s = subject(db, user, "pw-1")
    try:
        Rotation(s).finish()
        assert grants_of(db, clone) == grants_of(db, user)
        assert s.current()["username"] == clone  # type: ignore[index]
        # drift: a privilege granted by hand to the now inactive account only, one revoked
        admin(
            db,
            (f"GRANT DROP ON {d}.* TO %s@'%%'", (user,)),
            (f"REVOKE SELECT (id) ON {d}.audit FROM %s@'%%'", (clone,)),
            (f"GRANT CREATE ON {d}.* TO %s@'%%'", (clone,)),
        )
        Rotation(s).finish()  # clone -> app: app is made equal to clone again
        assert grants_of(db, user) == grants_of(db, clone)
        assert not any("DROP" in g for g in grants_of(db, user))
        assert any("CREATE" in g for g in grants_of(db, user))
        assert not any("SELECT (`id`)" in g for g in grants_of(db, user))  # revoked on clone
    finally:
        admin(db, f"DROP ROLE IF EXISTS {role}")


def test_hostile_names_are_only_names(mariadb_server, tmp_path: Path) -> None:
    from tests.backends.mariadb import MariaDbDatabase

    name = f"kt`; DROP DATABASE mysql; -- %_{uuid.uuid4().hex[:6]}"
    admin_db = MariaDbDatabase(mariadb_server, name)
    user = "x'); DROP USER kt_admin; -- " + uuid.uuid4().hex[:4]
    admin_db.track_user(user)
    admin_db.track_user(user + "_clone")
    with mariadb_server.admin_connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {q(name)}")
        cur.execute(f"CREATE TABLE {q(name)}.`t``x` (a int)")
    try:
        admin(
            admin_db,
            ("CREATE USER %s@'%%' IDENTIFIED BY 'pw-1'", (user,)),
            (f"GRANT SELECT ON {grants.quote_identifier(name)}.`t``x` TO %s@'%%'", (user,)),
        )
        s = subject(admin_db, user, "pw-1")
        Rotation(s).finish()
        new = s.current()
        assert new["username"] == user + "_clone"  # type: ignore[index]
        assert admin_db.accepts(new["username"], new["password"])  # type: ignore[index]
        assert grants_of(admin_db, user + "_clone") == grants_of(admin_db, user)
        assert mariadb_server.accepts(mariadb_server.admin_user, mariadb_server.admin_password)
    finally:
        admin_db.drop()


def test_passwords_never_reach_the_server_log(mariadb_database: MariaDbDatabase) -> None:
    db = mariadb_database
    log = db.server.root / "general.log"
    user = db.user("app")
    db.track_user(user + "_clone")
    admin(
        db,
        ("CREATE USER %s@'%%' IDENTIFIED BY 'pw-1'", (user,)),
        (f"GRANT SELECT ON {q(db.name)}.* TO %s@'%%'", (user,)),
    )
    for mode in ("alternating", "single"):
        admin(db, ("ALTER USER %s@'%%' IDENTIFIED BY 'pw-1'", (user,)))
        s = subject(db, user, "pw-1")
        s.target["mode"] = mode
        admin(db, f"SET GLOBAL general_log_file = '{log}'", "SET GLOBAL general_log = 1")
        try:
            run = Rotation(s)
            run.until(RunState.PROMOTED)
            rolled_back = run.new_value()
            run.rollback()  # undo sets the old password back (single) or scrambles (alt.)
            second = Rotation(s).finish()
        finally:
            admin(db, "SET GLOBAL general_log = 0")
        text = log.read_text(errors="replace")
        assert "ALTER USER" in text or "SET PASSWORD" in text  # the log is on and holds them
        for value in (rolled_back, second.new_value()):
            assert value["password"] not in text  # type: ignore[index]


def test_apply_refuses_when_the_active_account_is_missing(
    mariadb_database: MariaDbDatabase,
) -> None:
    s = subject(mariadb_database, mariadb_database.user("ghost"), "pw")
    run = Rotation(s).until(RunState.CREATED)
    with pytest.raises(TargetRejected, match="does not exist") as refused:
        run.step()
    assert not refused.value.retryable
