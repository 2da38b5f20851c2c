"""Making one MySQL/MariaDB account's privileges equal to another's (alternating users).

Mirrored, exactly (missing granted, extra revoked): privileges at the global, database, table
and column levels, with the GRANT OPTION of each level, read from ``information_schema``
(``USER_PRIVILEGES``, ``SCHEMA_PRIVILEGES``, ``TABLE_PRIVILEGES``, ``COLUMN_PRIVILEGES``); on
MariaDB also role memberships (with their admin option) and the default role. Not mirrored:
routine privileges, proxy grants, resource limits, ``REQUIRE`` options, MySQL 8 roles (a MySQL
account with roles is refused, never half-copied).

Account names, hosts and role names travel as driver parameters (string literals, which MySQL
accepts for accounts); database, table and column names cannot, so they are backquoted by
:func:`quote_identifier` (the only identifiers in these statements). Privilege keywords come
from the server's own catalog and must be upper-case words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Account", "Level", "Privileges", "differences", "plan_sync", "quote_identifier"]

_KEYWORD = re.compile(r"[A-Z][A-Z ]{0,40}")


def quote_identifier(name: str) -> str:
    """A backquoted identifier, ready for a statement that also has ``%s`` parameters (PyMySQL
    interpolates them with ``%``, so a literal ``%`` is doubled)."""
    if "\x00" in name or not name:
        raise ValueError("a MySQL identifier cannot be empty or contain NUL")
    return ("`" + name.replace("`", "``") + "`").replace("%", "%%")


@dataclass(frozen=True)
class Account:
    """``'user'@'host'``."""

    user: str
    host: str

    @property
    def grantee(self) -> str:
        """How ``information_schema`` spells the account (the server does not escape it)."""
        return f"'{self.user}'@'{self.host}'"

    @property
    def params(self) -> tuple[str, str]:
        return (self.user, self.host)

    def __str__(self) -> str:
        return f"{self.user}@{self.host}"


@dataclass(frozen=True, order=True)
class Level:
    """Where a privilege applies: global (``*.*``), a database, a table, or a table's column."""

    kind: str
    database: str = ""
    table: str = ""
    column: str = ""

    def on(self) -> str:
        """The ``ON`` clause (column privileges name their column in the privilege list)."""
        if self.kind == "global":
            return "*.*"
        if self.kind == "database":
            return f"{quote_identifier(self.database)}.*"
        return f"{quote_identifier(self.database)}.{quote_identifier(self.table)}"

    def privilege(self, keyword: str) -> str:
        if not _KEYWORD.fullmatch(keyword):
            raise ValueError(f"unexpected privilege keyword {keyword[:40]!r}")
        return f"{keyword} ({quote_identifier(self.column)})" if self.kind == "column" else keyword

    def __str__(self) -> str:
        names = [n for n in (self.database, self.table, self.column) if n]
        return f"{self.kind} {'.'.join(names)}".strip()


@dataclass(frozen=True)
class Privileges:
    """What an account may do, as far as the sync is concerned."""

    account: Account
    #: level -> privilege keywords (``USAGE`` left out).
    grants: dict[Level, frozenset[str]] = field(default_factory=dict)
    #: Levels (global, database, table) the account holds WITH GRANT OPTION.
    grant_option: frozenset[Level] = frozenset()
    #: role -> admin option (MariaDB).
    roles: dict[str, bool] = field(default_factory=dict)
    default_role: str = ""


_QUERIES = {
    "global": "SELECT '', '', '', PRIVILEGE_TYPE, IS_GRANTABLE "
    "FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = %s",
    "database": "SELECT TABLE_SCHEMA, '', '', PRIVILEGE_TYPE, IS_GRANTABLE "
    "FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = %s",
    "table": "SELECT TABLE_SCHEMA, TABLE_NAME, '', PRIVILEGE_TYPE, IS_GRANTABLE "
    "FROM information_schema.TABLE_PRIVILEGES WHERE GRANTEE = %s",
    "column": "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, PRIVILEGE_TYPE, IS_GRANTABLE "
    "FROM information_schema.COLUMN_PRIVILEGES WHERE GRANTEE = %s",
}


def snapshot(cur: Any, account: Account, *, mariadb: bool) -> Privileges:
    """The account's privileges (the account must exist)."""
    grants: dict[Level, set[str]] = {}
    option: set[Level] = set()
    for kind, query in _QUERIES.items():
        cur.execute(query, (account.grantee,))
        for database, table, column, privilege, grantable in cur.fetchall():
            level = Level(kind, str(database), str(table), str(column))
            if grantable == "YES" and kind != "column":  # a column's option is its table's
                option.add(level)
            if privilege != "USAGE":
                grants.setdefault(level, set()).add(str(privilege))
    roles: dict[str, bool] = {}
    default_role = ""
    if mariadb:
        cur.execute(
            "SELECT Role, Admin_option FROM mysql.roles_mapping WHERE User = %s AND Host = %s",
            account.params,
        )
        roles = {str(role): admin == "Y" for role, admin in cur.fetchall()}
        cur.execute(
            "SELECT default_role FROM mysql.user WHERE User = %s AND Host = %s", account.params
        )
        row = cur.fetchone()
        default_role = str(row[0] or "") if row else ""
    return Privileges(
        account,
        {level: frozenset(p) for level, p in grants.items()},
        frozenset(option),
        roles,
        default_role,
    )


def mysql_roles(cur: Any, account: Account) -> int:
    """How many MySQL 8 roles ``account`` was granted (0 where the table does not exist)."""
    cur.execute(
        "SELECT COUNT(*) FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = 'mysql' AND TABLE_NAME = 'role_edges'"
    )
    if not cur.fetchone()[0]:
        return 0
    cur.execute(
        "SELECT COUNT(*) FROM mysql.role_edges WHERE TO_USER = %s AND TO_HOST = %s",
        account.params,
    )
    return int(cur.fetchone()[0])


Statement = tuple[str, tuple[str, ...]]


def plan_sync(active: Privileges, inactive: Privileges) -> list[Statement]:
    """The statements (with their parameters) that make ``inactive`` equal to ``active``."""
    to = inactive.account.params
    statements: list[Statement] = []
    for level in sorted(set(active.grants) | set(inactive.grants)):
        want = active.grants.get(level, frozenset())
        have = inactive.grants.get(level, frozenset())
        missing, extra = sorted(want - have), sorted(have - want)
        if extra:
            privs = ", ".join(level.privilege(p) for p in extra)
            statements.append((f"REVOKE {privs} ON {level.on()} FROM %s@%s", to))
        if missing:
            privs = ", ".join(level.privilege(p) for p in missing)
            statements.append((f"GRANT {privs} ON {level.on()} TO %s@%s", to))
    for level in sorted(active.grant_option - inactive.grant_option):
        statements.append((f"GRANT USAGE ON {level.on()} TO %s@%s WITH GRANT OPTION", to))
    for level in sorted(inactive.grant_option - active.grant_option):
        statements.append((f"REVOKE GRANT OPTION ON {level.on()} FROM %s@%s", to))
    mine = _mirrored_roles(active, inactive.account)
    theirs = _mirrored_roles(inactive, active.account)
    for role in sorted(set(mine) | set(theirs)):
        if role not in mine:
            statements.append(("REVOKE %s FROM %s@%s", (role, *to)))
        elif role not in theirs or (mine[role] and not theirs[role]):
            admin = " WITH ADMIN OPTION" if mine[role] else ""
            statements.append((f"GRANT %s TO %s@%s{admin}", (role, *to)))
        elif theirs[role] and not mine[role]:
            statements.append(("REVOKE ADMIN OPTION FOR %s FROM %s@%s", (role, *to)))
    if active.default_role != inactive.default_role:
        if active.default_role:
            statements.append(("SET DEFAULT ROLE %s FOR %s@%s", (active.default_role, *to)))
        else:
            statements.append(("SET DEFAULT ROLE NONE FOR %s@%s", to))
    return statements


def _mirrored_roles(privileges: Privileges, other: Account) -> dict[str, bool]:
    # the pair's own names are never mirrored as roles
    skip = {privileges.account.user, other.user}
    return {role: admin for role, admin in privileges.roles.items() if role not in skip}


def differences(active: Privileges, inactive: Privileges) -> list[str]:
    """Human-readable differences the sync should have removed (empty when in sync)."""
    found: list[str] = []
    for level in sorted(set(active.grants) | set(inactive.grants)):
        want = active.grants.get(level, frozenset())
        have = inactive.grants.get(level, frozenset())
        found += [f"{p} on {level}" for p in sorted(want ^ have)]
    found += [f"GRANT OPTION on {lv}" for lv in sorted(active.grant_option ^ inactive.grant_option)]
    if _mirrored_roles(active, inactive.account) != _mirrored_roles(inactive, active.account):
        found.append("role memberships")
    if active.default_role != inactive.default_role:
        found.append("default role")
    return found


def describe(statements: Iterable[Statement]) -> list[str]:
    """The statements without their parameters (for messages)."""
    return [text.replace("%%", "%") for text, _ in statements]
