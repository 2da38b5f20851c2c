"""A throwaway Redis server whose ACL users the Redis rotator's tests may change freely.

The shared server on 127.0.0.1:6379 backs Celery and is never touched. Each test gets its own
``redis-server`` on a free port (``--save '' --appendonly no``, its files in a temp dir), whose
``default`` user needs a password and which has an admin ACL user ``kt_admin`` (all keys,
channels and commands); it is stopped after the test. Starting one takes a few milliseconds.

Fixture (registered in ``tests/conftest.py``):

- ``redis_acl_server`` (function): a :class:`RedisAclServer` with ``host``, ``port``,
  ``admin_user`` / ``admin_password``, ``default_password``, ``client(user, password)``,
  ``admin_client()``, ``accepts(user, password)`` and ``credential(user, password)``.

Redis ACL users may hold several passwords at once: ``ACL SETUSER u on >new`` adds one,
``ACL SETUSER u <old`` removes one.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.backends.ports import free_port

__all__ = ["RedisAclServer", "redis_acl_server", "start_redis_acl"]

ADMIN_USER = "kt_admin"


@dataclass
class RedisAclServer:
    """A running throwaway redis-server and its admin ACL user."""

    host: str
    port: int
    admin_user: str
    admin_password: str
    default_password: str
    root: Path
    process: subprocess.Popen[bytes]

    def client(self, user: str, password: str, **kwargs: Any) -> redis.Redis:
        """A client authenticating as ``user`` on first use, not retrying (a refused AUTH
        would otherwise be retried with backoff); caller closes it."""
        kwargs.setdefault("socket_timeout", 5)
        kwargs.setdefault("retry", Retry(NoBackoff(), 0))
        return redis.Redis(
            host=self.host, port=self.port, username=user, password=password, **kwargs
        )

    def admin_client(self) -> redis.Redis:
        """A client as ``kt_admin`` (caller closes it)."""
        return self.client(self.admin_user, self.admin_password, decode_responses=True)

    def accepts(self, user: str, password: str) -> bool:
        """Whether ``AUTH user password`` succeeds (False on WRONGPASS)."""
        client = self.client(user, password)
        try:
            client.ping()
        except redis.AuthenticationError:
            return False
        finally:
            client.close()
        return True

    def credential(self, user: str, password: str) -> dict[str, Any]:
        """The JSON object a secret holds for this server."""
        return {"username": user, "password": password, "host": self.host, "port": self.port}

    def stop(self) -> None:
        """Kill the server and remove its directory."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def start_redis_acl(attempts: int = 3, timeout: float = 10.0) -> RedisAclServer:
    """Start ``redis-server`` on a free port with a password for ``default`` and ``kt_admin``."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is missing")
    last = ""
    for _ in range(attempts):  # the free port may be taken between probe and bind
        root = Path(tempfile.mkdtemp(prefix="keyturn-redis-"))
        port, admin_password, default_password = free_port(), uuid.uuid4().hex, uuid.uuid4().hex
        # in a config file, not on the command line, so `ps` does not show the passwords
        (root / "redis.conf").write_text(
            f"bind 127.0.0.1\nport {port}\ndir {root}\nsave ''\nappendonly no\n"
            f"logfile {root / 'redis.log'}\n"
            f"user default on >{default_password} ~* &* +@all\n"
            f"user {ADMIN_USER} on >{admin_password} ~* &* +@all\n"
        )
        process = subprocess.Popen(
            [binary, str(root / "redis.conf"), "--save", "", "--appendonly", "no"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        server = RedisAclServer(
            "127.0.0.1", port, ADMIN_USER, admin_password, default_password, root, process
        )
        try:
            _wait_ready(server, timeout)
        except RuntimeError as exc:
            log = root / "redis.log"
            last = f"{exc}\n{log.read_text(errors='replace')[-2000:] if log.exists() else ''}"
            server.stop()
            continue
        return server
    raise RuntimeError(f"redis-server did not start:\n{last}")


def _wait_ready(server: RedisAclServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"redis-server exited with code {server.process.returncode}")
        client = server.admin_client()
        try:
            client.ping()
            return
        except redis.ConnectionError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer within {timeout} s") from exc
            time.sleep(0.02)
        finally:
            client.close()


@pytest.fixture
def redis_acl_server() -> Iterator[RedisAclServer]:
    """A fresh throwaway redis-server (free port) for one test, killed after it."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = start_redis_acl()
    try:
        yield server
    finally:
        server.stop()
