"""Making one role's grants equal to another's (the alternating-users Postgres rotation).

What is mirrored from the active role onto the inactive one, exactly (missing granted, extra
revoked): the attributes INHERIT, CREATEDB, CREATEROLE and CONNECTION LIMIT; SUPERUSER,
REPLICATION and BYPASSRLS too, but only when the admin is a superuser (otherwise a difference
is reported, never silently ignored); role memberships (with their admin option); explicit
privileges on the database, on its non-system schemas (USAGE, CREATE) and on their tables,
views and sequences, with their grant option. Not mirrored: object ownership, column and
function privileges, default privileges, other databases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

__all__ = ["Grant", "RoleSnapshot", "differences", "plan_sync", "snapshot"]

#: Attribute column -> the ALTER ROLE keyword that turns it on (``NO`` + keyword turns it off).
SAFE_ATTRIBUTES = {
    "rolinherit": "INHERIT",
    "rolcreatedb": "CREATEDB",
    "rolcreaterole": "CREATEROLE",
}
#: Attributes only a superuser may change.
PRIVILEGED_ATTRIBUTES = {
    "rolsuper": "SUPERUSER",
    "rolreplication": "REPLICATION",
    "rolbypassrls": "BYPASSRLS",
}
#: Privilege keywords the catalog may report; anything else is left alone.
ATTRIBUTES = {**SAFE_ATTRIBUTES, **PRIVILEGED_ATTRIBUTES}
_PRIVILEGES = frozenset(
    "SELECT INSERT UPDATE DELETE TRUNCATE REFERENCES TRIGGER MAINTAIN USAGE CREATE CONNECT "
    "TEMPORARY".split()
)
_KIND_KEYWORDS = {
    "database": "DATABASE",
    "schema": "SCHEMA",
    "table": "TABLE",
    "sequence": "SEQUENCE",
}

_ROLE_QUERY = """
SELECT oid, rolinherit, rolcreatedb, rolcreaterole, rolsuper, rolreplication, rolbypassrls,
       rolconnlimit
FROM pg_roles WHERE rolname = %s
"""
_MEMBERSHIP_QUERY = """
SELECT r.rolname, bool_or(m.admin_option)
FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid
WHERE m.member = %s
GROUP BY r.rolname
"""
_SYSTEM_SCHEMA = "(n.nspname NOT LIKE 'pg\\_%%' AND n.nspname <> 'information_schema')"
_PRIVILEGE_QUERY = f"""
SELECT 'database', NULL, d.datname, a.privilege_type, a.is_grantable
FROM pg_database d, aclexplode(d.datacl) a
WHERE d.datname = current_database() AND a.grantee = %(oid)s
UNION ALL
SELECT 'schema', NULL, n.nspname, a.privilege_type, a.is_grantable
FROM pg_namespace n, aclexplode(n.nspacl) a
WHERE {_SYSTEM_SCHEMA} AND a.grantee = %(oid)s
UNION ALL
SELECT CASE c.relkind WHEN 'S' THEN 'sequence' ELSE 'table' END, n.nspname, c.relname,
       a.privilege_type, a.is_grantable
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {_SYSTEM_SCHEMA} AND a.grantee = %(oid)s
"""


@dataclass(frozen=True, order=True)
class Grant:
    """One explicit privilege on one object (without its grant option)."""

    kind: str
    schema: str | None
    name: str
    privilege: str

    def target(self) -> sql.Composable:
        if self.kind in ("table", "sequence") and self.schema is not None:
            return sql.Identifier(self.schema, self.name)
        return sql.Identifier(self.name)

    def __str__(self) -> str:
        where = f"{self.schema}.{self.name}" if self.schema else self.name
        return f"{self.privilege} on {self.kind} {where}"


@dataclass(frozen=True)
class RoleSnapshot:
    """What a role can do, as far as the sync is concerned."""

    name: str
    attributes: dict[str, bool]
    connection_limit: int
    #: Role name -> whether it was granted WITH ADMIN OPTION.
    memberships: dict[str, bool]
    #: Privilege -> whether it was granted WITH GRANT OPTION.
    privileges: dict[Grant, bool]


def snapshot(conn: psycopg.Connection[Any], role: str) -> RoleSnapshot | None:
    """The role's attributes, memberships and explicit privileges in this database; None if
    the role does not exist."""
    row = conn.cursor(row_factory=dict_row).execute(_ROLE_QUERY, (role,)).fetchone()
    if row is None:
        return None
    attributes = {column: bool(row[column]) for column in ATTRIBUTES}
    oid, limit = row["oid"], int(row["rolconnlimit"])
    memberships = {
        str(name): bool(admin) for name, admin in conn.execute(_MEMBERSHIP_QUERY, (oid,))
    }
    privileges = {
        Grant(str(kind), schema, str(name), str(privilege)): bool(grantable)
        for kind, schema, name, privilege, grantable in conn.execute(_PRIVILEGE_QUERY, {"oid": oid})
        if privilege in _PRIVILEGES
    }
    return RoleSnapshot(role, attributes, limit, memberships, privileges)


def _mirrored(snap: RoleSnapshot, other: str) -> dict[str, bool]:
    # a membership between the pair itself would be circular: never mirrored
    return {k: v for k, v in snap.memberships.items() if k not in (snap.name, other)}


def differences(active: RoleSnapshot, inactive: RoleSnapshot) -> list[str]:
    """Human-readable differences the sync should have removed (empty when in sync)."""
    found = [
        f"attribute {keyword}"
        for column, keyword in ATTRIBUTES.items()
        if active.attributes[column] != inactive.attributes[column]
    ]
    if active.connection_limit != inactive.connection_limit:
        found.append("CONNECTION LIMIT")
    if _mirrored(active, inactive.name) != _mirrored(inactive, active.name):
        found.append("role memberships")
    for grant in sorted(set(active.privileges) ^ set(inactive.privileges)):
        found.append(str(grant))
    for grant in sorted(set(active.privileges) & set(inactive.privileges)):
        if active.privileges[grant] != inactive.privileges[grant]:
            found.append(f"grant option of {grant}")
    return found


def plan_sync(
    active: RoleSnapshot, inactive: RoleSnapshot, *, admin_is_superuser: bool
) -> tuple[list[sql.Composed], list[str]]:
    """The statements that make ``inactive`` equal to ``active``, and the attribute differences
    the admin may not fix (non-empty means: refuse the rotation)."""
    role = sql.Identifier(inactive.name)
    statements: list[sql.Composed] = []
    refused: list[str] = []
    options: list[sql.Composable] = []
    for column, keyword in ATTRIBUTES.items():
        wanted = active.attributes[column]
        if wanted == inactive.attributes[column]:
            continue
        if column in PRIVILEGED_ATTRIBUTES and not admin_is_superuser:
            refused.append(keyword if wanted else f"NO{keyword}")
            continue
        options.append(sql.SQL(keyword if wanted else f"NO{keyword}"))
    if active.connection_limit != inactive.connection_limit:
        options.append(sql.SQL("CONNECTION LIMIT {}").format(sql.Literal(active.connection_limit)))
    if options:
        statements.append(sql.SQL("ALTER ROLE {} WITH {}").format(role, sql.SQL(" ").join(options)))

    wanted_roles = _mirrored(active, inactive.name)
    have_roles = _mirrored(inactive, active.name)
    for name in sorted(set(wanted_roles) | set(have_roles)):
        group = sql.Identifier(name)
        if name not in wanted_roles:
            statements.append(sql.SQL("REVOKE {} FROM {}").format(group, role))
        elif name not in have_roles or (wanted_roles[name] and not have_roles[name]):
            admin = sql.SQL(" WITH ADMIN OPTION") if wanted_roles[name] else sql.SQL("")
            statements.append(sql.SQL("GRANT {} TO {}{}").format(group, role, admin))
        elif have_roles[name] and not wanted_roles[name]:
            statements.append(sql.SQL("REVOKE ADMIN OPTION FOR {} FROM {}").format(group, role))

    for grant in sorted(set(active.privileges) | set(inactive.privileges)):
        on = sql.SQL("{} ON {} {}").format(
            sql.SQL(grant.privilege), sql.SQL(_KIND_KEYWORDS[grant.kind]), grant.target()
        )
        want = active.privileges.get(grant)
        have = inactive.privileges.get(grant)
        if want is None:
            statements.append(sql.SQL("REVOKE {} FROM {}").format(on, role))
        elif have is None or (want and not have):
            option = sql.SQL(" WITH GRANT OPTION") if want else sql.SQL("")
            statements.append(sql.SQL("GRANT {} TO {}{}").format(on, role, option))
        elif have and not want:
            statements.append(sql.SQL("REVOKE GRANT OPTION FOR {} FROM {}").format(on, role))
    return statements, refused
