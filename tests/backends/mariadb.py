"""A throwaway MariaDB server for the MySQL/MariaDB rotator's tests.

A package's post-install may leave a system MariaDB on 3306: it is never used nor stopped. These
fixtures start a private server instead (``mariadb-install-db`` + ``mariadbd``, both with
``--no-defaults``), listening on a free port on 127.0.0.1 with its data and socket in a temp dir,
and kill it at session end. MariaDB has no dual passwords (no ``RETAIN CURRENT PASSWORD``): a
zero-downtime rotation alternates between two users.

Fixtures (registered in ``tests/conftest.py``):

- ``mariadb_server`` (session): a :class:`MariaDbServer` with ``host``, ``port``,
  ``admin_user`` / ``admin_password`` (``kt_admin``@'%', ALL PRIVILEGES WITH GRANT OPTION),
  ``connect(user, password, database=None)``, ``admin_connect(database=None)``,
  ``accepts(user, password)``, ``credential(user, password, database=None)``.
- ``mariadb_database`` (function): a :class:`MariaDbDatabase`, a fresh database with ``name``,
  ``server``, ``admin_secret``, ``user(name)`` (a per-test user name) and ``connect`` /
  ``admin_connect`` / ``accepts`` / ``credential`` on that database; the database and the users
  named through it are dropped after the test.

Skipped with a reason when ``mariadbd`` or ``mariadb-install-db`` is not installed
(``scripts/install-test-deps.sh`` installs them).
"""

from __future__ import annotations

import contextlib
import getpass
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.backends.ports import free_port

__all__ = [
    "MariaDbDatabase",
    "MariaDbServer",
    "find_mariadb",
    "mariadb_database",
    "mariadb_server",
    "start_mariadb",
]

ADMIN_USER = "kt_admin"
#: MariaDB's "Access denied for user" (a refused login).
ER_ACCESS_DENIED = 1045
_SBIN = "/usr/sbin:/usr/bin:/sbin:/bin"


def find_mariadb() -> tuple[str, str] | None:
    """Paths of ``mariadbd`` and ``mariadb-install-db`` (PATH, then the sbin dirs), or None."""
    server = shutil.which("mariadbd") or shutil.which("mariadbd", path=_SBIN)
    install = shutil.which("mariadb-install-db") or shutil.which("mariadb-install-db", path=_SBIN)
    return (server, install) if server and install else None


@dataclass
class MariaDbServer:
    """A running throwaway server and its admin user."""

    host: str
    port: int
    admin_user: str
    admin_password: str
    root: Path
    process: subprocess.Popen[bytes]
    connect_timeout: int = 5

    def connect(self, user: str, password: str, database: str | None = None, **kwargs: Any) -> Any:
        """A new PyMySQL connection over TCP (caller closes it)."""
        import pymysql

        kwargs.setdefault("connect_timeout", self.connect_timeout)
        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=user,
            password=password,
            database=database,
            autocommit=True,
            **kwargs,
        )

    def admin_connect(self, database: str | None = None) -> Any:
        """A connection as ``kt_admin`` (autocommit; caller closes it)."""
        return self.connect(self.admin_user, self.admin_password, database)

    def accepts(self, user: str, password: str, database: str | None = None) -> bool:
        """Whether ``user`` can log in with ``password`` (False on "Access denied")."""
        import pymysql

        try:
            self.connect(user, password, database).close()
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] == ER_ACCESS_DENIED:
                return False
            raise
        return True

    def credential(self, user: str, password: str, database: str | None = None) -> dict[str, Any]:
        """The JSON object a secret holds for this server: username, password, host, port..."""
        answer: dict[str, Any] = {
            "username": user,
            "password": password,
            "host": self.host,
            "port": self.port,
        }
        if database is not None:
            answer["dbname"] = database
        return answer

    def log(self) -> str:
        path = self.root / "err.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        """Kill the server and remove its directory."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def start_mariadb(attempts: int = 3, timeout: float = 30.0) -> MariaDbServer:
    """Install a fresh datadir, start ``mariadbd`` on a free port, create ``kt_admin``."""
    binaries = find_mariadb()
    if binaries is None:
        raise FileNotFoundError("mariadbd is missing: scripts/install-test-deps.sh installs it")
    mariadbd, install_db = binaries
    user = getpass.getuser()
    root = Path(tempfile.mkdtemp(prefix="keyturn-mariadb-", dir="/tmp"))  # short socket path
    try:
        result = subprocess.run(
            [install_db, "--no-defaults", f"--datadir={root / 'data'}", f"--user={user}",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            capture_output=True, text=True, cwd=root, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed:\n{result.stdout}\n{result.stderr}")
        last = ""
        for _ in range(attempts):  # the free port may be taken between probe and bind
            server = _spawn(mariadbd, root, user, free_port())
            try:
                _wait_ready(server, timeout)
            except RuntimeError as exc:
                last = f"{exc}\n{server.log()}"
                if server.process.poll() is None:
                    server.process.kill()
                server.process.wait(timeout=10)
                continue
            return server
        raise RuntimeError(f"MariaDB did not start:\n{last}")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _spawn(mariadbd: str, root: Path, user: str, port: int) -> MariaDbServer:
    args = [
        mariadbd, "--no-defaults", f"--datadir={root / 'data'}", f"--port={port}",
        "--bind-address=127.0.0.1", f"--socket={root / 'sock'}", f"--user={user}",
        f"--pid-file={root / 'pid'}", f"--log-error={root / 'err.log'}",
        "--skip-log-bin", "--performance-schema=OFF", "--innodb-buffer-pool-size=32M",
        "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0", "--max-connections=50",
    ]  # fmt: skip
    process = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return MariaDbServer("127.0.0.1", port, ADMIN_USER, uuid.uuid4().hex, root, process)


def _wait_ready(server: MariaDbServer, timeout: float) -> None:
    """Wait for a TCP login as root (no password), then create the admin user."""
    import pymysql

    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"mariadbd exited with code {server.process.returncode}")
        try:
            conn = server.connect("root", "", connect_timeout=1)
            break
        except pymysql.err.OperationalError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"mariadbd did not accept a login within {timeout} s") from exc
            time.sleep(0.05)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT user, host FROM mysql.user WHERE user = ''")
        for user, host in cur.fetchall():  # anonymous users would shadow 'name'@'%'
            cur.execute("DROP USER %s@%s", (user, host))
        cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (ADMIN_USER, server.admin_password))
        cur.execute("GRANT ALL PRIVILEGES ON *.* TO %s@'%%' WITH GRANT OPTION", (ADMIN_USER,))
        cur.execute("GRANT CREATE USER ON *.* TO %s@'%%'", (ADMIN_USER,))  # part of ALL; explicit


def quote_identifier(name: str) -> str:
    """A backquoted MariaDB identifier."""
    return "`" + name.replace("`", "``") + "`"


@dataclass
class MariaDbDatabase:
    """A fresh database on the throwaway server, with the admin credential for rotators."""

    server: MariaDbServer
    name: str
    _users: list[str] = field(default_factory=list)

    @property
    def admin_secret(self) -> dict[str, Any]:
        """``kt_admin``'s credential for this database, as a rotator's ``admin_secret``."""
        return self.server.credential(self.server.admin_user, self.server.admin_password, self.name)

    def user(self, name: str) -> str:
        """A per-test user name (``<name>_<database suffix>``), dropped (``@'%'``) after."""
        user = f"{name}_{self.name.rsplit('_', 1)[-1]}"
        return self.track_user(user)

    def track_user(self, user: str) -> str:
        """Drop ``user``@'%' (if it exists) when the test ends."""
        if user not in self._users:
            self._users.append(user)
        return user

    def connect(self, user: str, password: str) -> Any:
        return self.server.connect(user, password, self.name)

    def admin_connect(self) -> Any:
        return self.server.admin_connect(self.name)

    def accepts(self, user: str, password: str) -> bool:
        return self.server.accepts(user, password, self.name)

    def credential(self, user: str, password: str) -> dict[str, Any]:
        return self.server.credential(user, password, self.name)

    def drop(self) -> None:
        import pymysql

        with self.server.admin_connect() as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {quote_identifier(self.name)}")
            for user in self._users:
                with contextlib.suppress(pymysql.err.MySQLError):
                    cur.execute("DROP USER IF EXISTS %s@'%%'", (user,))


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDbServer]:
    """A throwaway MariaDB on a free port for the whole session, killed at its end."""
    if find_mariadb() is None:
        pytest.skip("mariadbd is not installed (scripts/install-test-deps.sh installs it)")
    pytest.importorskip("pymysql")
    server = start_mariadb()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mariadb_database(mariadb_server: MariaDbServer) -> Iterator[MariaDbDatabase]:
    """A fresh database on ``mariadb_server``, dropped (with its tracked users) after the test."""
    name = f"kt_{uuid.uuid4().hex[:10]}"
    with mariadb_server.admin_connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {quote_identifier(name)}")
    database = MariaDbDatabase(mariadb_server, name)
    try:
        yield database
    finally:
        database.drop()
