"""A throwaway OpenLDAP server (slapd) for the LDAP password rotator's tests.

A package's post-install may leave a system slapd on 389: it is never used nor stopped. These
fixtures write a small ``slapd.conf`` (core, cosine and inetorgperson schemas, an mdb database
for ``dc=keyturn,dc=test`` in a temp dir), start ``slapd -f slapd.conf -h ldap://127.0.0.1:P/``
on a free port (slapd daemonizes; it is killed by its pidfile at session end) and load the base
entries. The ACL lets an entry change its own ``userPassword`` (RFC 3062 password modify), the
way a service account rotates its password, and lets anyone bind.

Fixtures (registered in ``tests/conftest.py``):

- ``slapd_server`` (session): a :class:`SlapdServer` with ``host``, ``port``, ``url``,
  ``suffix``, ``services_dn``, ``root_dn`` / ``root_password``, ``connect(dn, password)``,
  ``root_connect()``, ``accepts(dn, password)``, ``add_service_account(name, password)``
  (returns its DN) and ``delete(dn)``.
- ``ldap_service_account`` (function): a :class:`LdapAccount` (``dn``, ``name``, ``password``),
  an inetOrgPerson under ``ou=services`` with a fresh name and password, deleted after the test.

Skipped with a reason when slapd or the ldap3 package is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
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
    "LdapAccount",
    "SlapdServer",
    "find_slapd",
    "ldap_service_account",
    "slapd_server",
    "start_slapd",
]

SUFFIX = "dc=keyturn,dc=test"
ROOT_DN = f"cn=admin,{SUFFIX}"
SERVICES_DN = f"ou=services,{SUFFIX}"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
_SBIN = "/usr/sbin:/usr/bin:/sbin:/bin"

SLAPD_CONF = """\
include {schema}/core.schema
include {schema}/cosine.schema
include {schema}/inetorgperson.schema
pidfile {root}/slapd.pid
argsfile {root}/slapd.args
modulepath {modules}
moduleload back_mdb
database mdb
maxsize 16777216
suffix "{suffix}"
rootdn "{root_dn}"
rootpw {root_password}
directory {root}/data
access to attrs=userPassword
  by self write
  by dn.exact="{root_dn}" write
  by anonymous auth
  by * none
access to *
  by * read
"""


def find_slapd() -> str | None:
    """The ``slapd`` binary (PATH, then the sbin dirs) when its schemas and mdb module exist."""
    binary = shutil.which("slapd") or shutil.which("slapd", path=_SBIN)
    if binary and (SCHEMA_DIR / "inetorgperson.schema").exists():
        return binary
    return None


@dataclass(frozen=True)
class LdapAccount:
    """A service account: its entry's DN, its uid and its current password."""

    dn: str
    name: str
    password: str


@dataclass
class SlapdServer:
    """A running throwaway slapd and its root (manager) DN."""

    host: str
    port: int
    suffix: str
    root_dn: str
    root_password: str
    root: Path
    tracked: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"ldap://{self.host}:{self.port}"

    @property
    def services_dn(self) -> str:
        return f"ou=services,{self.suffix}"

    def connect(self, dn: str, password: str) -> Any:
        """An ldap3 connection bound as ``dn`` (raises LDAPBindError when refused; caller
        unbinds it)."""
        import ldap3

        server = ldap3.Server(self.host, port=self.port, get_info=ldap3.NONE, connect_timeout=5)
        return ldap3.Connection(
            server, user=dn, password=password, auto_bind=True, receive_timeout=10,
            raise_exceptions=False,
        )  # fmt: skip

    def root_connect(self) -> Any:
        """A connection bound as the root DN (caller unbinds it)."""
        return self.connect(self.root_dn, self.root_password)

    def accepts(self, dn: str, password: str) -> bool:
        """Whether a simple bind as ``dn`` with ``password`` succeeds (False on
        invalidCredentials)."""
        import ldap3

        server = ldap3.Server(self.host, port=self.port, get_info=ldap3.NONE, connect_timeout=5)
        conn = ldap3.Connection(
            server, user=dn, password=password, receive_timeout=10, raise_exceptions=False
        )
        try:  # no auto_bind: a refused bind must not leave the socket open
            if conn.bind():
                return True
            if conn.result.get("description") == "invalidCredentials":
                return False
            raise RuntimeError(f"LDAP bind as {dn} failed: {conn.result}")
        finally:
            conn.unbind()

    def add_service_account(self, name: str, password: str) -> str:
        """Add ``uid=name,ou=services,<suffix>`` (inetOrgPerson) with ``password``; its DN."""
        dn = f"uid={name},{self.services_dn}"
        attributes = {"uid": name, "cn": name, "sn": "service", "userPassword": password}
        self._root_call("add", dn, ["inetOrgPerson"], attributes)
        return dn

    def delete(self, dn: str) -> None:
        """Delete the entry ``dn`` (a leaf)."""
        self._root_call("delete", dn)

    def _root_call(self, operation: str, *args: Any) -> None:
        conn = self.root_connect()
        try:
            if not getattr(conn, operation)(*args):
                raise RuntimeError(f"LDAP {operation} {args[0]} failed: {conn.result}")
        finally:
            conn.unbind()

    def track(self, dn: str) -> None:
        """Delete ``dn`` at :meth:`delete_tracked` (an entry a test added beside its account)."""
        self.tracked.append(dn)

    def delete_tracked(self) -> None:
        while self.tracked:
            self.delete(self.tracked.pop())

    def pid(self) -> int | None:
        path = self.root / "slapd.pid"
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text().strip())
        return None

    def stop(self) -> None:
        """Kill slapd (by its pidfile) and remove its directory."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.02)
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # slapd daemonized: its parent is init, which reaps it; a zombie counts as gone
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return True


def start_slapd(attempts: int = 3, timeout: float = 20.0) -> SlapdServer:
    """Write slapd.conf, start slapd on a free port, wait for a root bind, load the base."""
    binary = find_slapd()
    if binary is None:
        raise FileNotFoundError("slapd is missing: scripts/install-test-deps.sh installs it")
    last = ""
    for _ in range(attempts):  # the free port may be taken between probe and bind
        root = Path(tempfile.mkdtemp(prefix="keyturn-slapd-"))
        (root / "data").mkdir()
        server = SlapdServer("127.0.0.1", free_port(), SUFFIX, ROOT_DN, uuid.uuid4().hex, root)
        (root / "slapd.conf").write_text(
            SLAPD_CONF.format(
                schema=SCHEMA_DIR, modules=MODULE_DIR, root=root, suffix=SUFFIX,
                root_dn=ROOT_DN, root_password=server.root_password,
            )
        )  # fmt: skip
        (root / "slapd.conf").chmod(0o600)
        result = subprocess.run(
            [binary, "-f", str(root / "slapd.conf"), "-h", f"{server.url}/"],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30, check=False,
        )  # fmt: skip
        try:
            if result.returncode != 0:
                raise RuntimeError(f"slapd exited with code {result.returncode}: {result.stderr}")
            _wait_ready(server, timeout)
            _load_base(server)
        except RuntimeError as exc:
            last = str(exc)
            server.stop()
            continue
        return server
    raise RuntimeError(f"slapd did not start:\n{last}")


def _wait_ready(server: SlapdServer, timeout: float) -> None:
    import ldap3
    from ldap3.core.exceptions import LDAPException

    deadline = time.monotonic() + timeout
    while True:
        address = ldap3.Server(server.host, port=server.port, get_info=ldap3.NONE)
        conn = ldap3.Connection(address, user=server.root_dn, password=server.root_password)
        try:
            if conn.bind():
                return
            raise LDAPException(f"root bind refused: {conn.result}")
        except LDAPException as exc:
            pid = server.pid()
            if pid is not None and not _alive(pid):
                raise RuntimeError("slapd exited") from exc
            if time.monotonic() > deadline:
                raise RuntimeError(f"slapd did not accept a root bind within {timeout} s") from exc
            time.sleep(0.05)
        finally:
            conn.unbind()
            if conn.socket is not None:  # ldap3 leaves a failed connect's socket open
                conn.socket.close()


def _load_base(server: SlapdServer) -> None:
    top = server.suffix.split(",", 1)[0].split("=", 1)[1]
    server._root_call(
        "add", server.suffix, ["dcObject", "organization"], {"dc": top, "o": "Keyturn tests"}
    )
    server._root_call("add", server.services_dn, ["organizationalUnit"], {"ou": "services"})


@pytest.fixture(scope="session")
def slapd_server() -> Iterator[SlapdServer]:
    """A throwaway slapd on a free port for the whole session, killed at its end."""
    if find_slapd() is None:
        pytest.skip("slapd is not installed (scripts/install-test-deps.sh installs it)")
    pytest.importorskip("ldap3")
    server = start_slapd()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ldap_service_account(slapd_server: SlapdServer) -> Iterator[LdapAccount]:
    """A fresh service account under ``ou=services`` with a random password, deleted after."""
    name = f"svc-{uuid.uuid4().hex[:10]}"
    password = uuid.uuid4().hex
    dn = slapd_server.add_service_account(name, password)
    try:
        yield LdapAccount(dn, name, password)
    finally:
        slapd_server.delete(dn)
