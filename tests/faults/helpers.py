"""Shared wiring for the fault suites in this folder (crash matrix, service restarts, backend
faults, beats): clusters on any broker, throwaway Redis and Postgres servers that can be stopped
and started again on the same port, Postgres roles for the postgres rotator, ledger queries.

Everything here is bounded: every wait has a deadline, every process is stopped by its own id.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from sqlalchemy import func, select

from rotation.ledger.db import Ledger
from rotation.ledger.migrate import upgrade
from rotation.ledger.models import Run, RunEvent
from rotation.providers.local import generate_key
from tests.backends.cluster import BROKER, Cluster
from tests.backends.pgserver import PgServer, start_pg_server

__all__ = [
    "BROKER",
    "FINAL",
    "LedgerServer",
    "RedisServer",
    "cluster_env",
    "deadline_wait",
    "event_counts",
    "free_port",
    "new_cluster",
    "runs_of",
    "write_policy",
]

#: States a run never leaves.
FINAL = ("succeeded", "failed", "needs_attention")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- clusters ----------------------------------------------------------------------------------


def cluster_env(
    tmp_path: Path, ledger_url: str, broker: str = BROKER, **overrides: str
) -> dict[str, str]:
    """The environment of a cluster's processes (as tests/backends/cluster.py's fixture), with
    fast crash recovery: lease 3 s, redelivery after 2 s, a dispatcher tick every second."""
    schedules = tmp_path / "schedules"
    schedules.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "KEYTURN_DATABASE_URL": ledger_url,
        "KEYTURN_BROKER_URL": broker,
        "KEYTURN_QUEUE": f"kt-faults-{uuid.uuid4().hex[:8]}",
        "SECRETS_PROVIDER": "local",
        "KEYTURN_LOCAL_DIR": str(tmp_path / "store"),
        "KEYTURN_LOCAL_KEY": generate_key(),
        "KEYTURN_SCHEDULES": str(schedules),
        "KEYTURN_TICK_SECONDS": "1",
        "KEYTURN_LEASE_SECONDS": "3",
        "KEYTURN_REDELIVER_SECONDS": "2",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(overrides)
    return env


def new_cluster(env: dict[str, str], workdir: Path) -> Cluster:
    """A :class:`Cluster` whose test-side Celery client talks to the env's broker."""
    cluster = Cluster(env, workdir)
    if env["KEYTURN_BROKER_URL"] != BROKER:
        cluster.app.close()
        cluster.app = Celery(broker=env["KEYTURN_BROKER_URL"])
        cluster.app.conf.update(broker_connection_retry_on_startup=True)
    return cluster


@contextlib.contextmanager
def running(cluster: Cluster) -> Iterator[Cluster]:
    """Stop every process of ``cluster`` and drop its queue's keys when the block ends."""
    try:
        yield cluster
    finally:
        cluster.stop()
        with contextlib.suppress(redis.RedisError):
            client = redis.Redis.from_url(cluster.env["KEYTURN_BROKER_URL"], socket_timeout=2)
            for key in client.scan_iter(f"*{cluster.env['KEYTURN_QUEUE']}*", count=500):
                client.delete(key)
            client.close()


def write_policy(cluster: Cluster, name: str, body: str) -> Path:
    """Write ``schedules/<name>.yaml`` atomically (the dispatcher must never read half a file)."""
    directory = Path(cluster.env["KEYTURN_SCHEDULES"])
    tmp = directory / f".{name}.tmp"
    tmp.write_text(body)
    path = directory / f"{name}.yaml"
    tmp.replace(path)
    return path


def deadline_wait(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    diagnostics: Callable[[], str] = lambda: "",
    interval: float = 0.2,
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``diagnostics`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what}\n{diagnostics()}"
            )
        time.sleep(interval)


# --- ledger queries ----------------------------------------------------------------------------


def runs_of(ledger: Ledger, secret: str | None = None) -> list[Run]:
    with ledger.sessions() as session:
        query = select(Run).order_by(Run.id)
        if secret is not None:
            query = query.where(Run.secret == secret)
        return list(session.scalars(query))


def event_counts(ledger: Ledger) -> dict[str, int]:
    """``run_events`` rows by outcome (ok, wait, retry, failed, ...)."""
    with ledger.sessions() as session:
        rows = session.execute(
            select(RunEvent.outcome, func.count()).group_by(RunEvent.outcome)
        ).all()
    return {outcome: int(count) for outcome, count in rows}


# --- throwaway servers that can be stopped and started again -----------------------------------


@dataclass
class RedisServer:
    """A private ``redis-server`` (no persistence) on a free port; ``stop``/``start`` keep the
    port, so clients configured with :attr:`url` find it again."""

    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def launch(cls) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed")
        server = cls(free_port(), Path(tempfile.mkdtemp(prefix="keyturn-redis-")))
        server.start()
        return server

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> None:
        args = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.workdir), "--daemonize", "no",
        ]  # fmt: skip
        log = open(self.workdir / "redis.log", "ab")
        self.process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline_wait(self.ping, timeout, f"redis-server on port {self.port}", self.log)

    def ping(self) -> bool:
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        """SIGKILL: an abrupt outage (no persistence, so queued messages are lost too)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def log(self) -> str:
        path = self.workdir / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class LedgerServer:
    """A private Postgres cluster holding a migrated ledger; ``stop``/``start`` keep the port
    and the data directory."""

    server: PgServer
    dbname: str = "ledger"

    @classmethod
    def launch(cls) -> LedgerServer:
        server = start_pg_server()
        ledger = cls(server)
        try:
            server.create_database(ledger.dbname)
            upgrade(ledger.url)
        except BaseException:
            server.stop()
            raise
        return ledger

    @property
    def url(self) -> str:
        s = self.server
        return (
            f"postgresql+psycopg://{s.admin_user}:{s.admin_password}@{s.host}:{s.port}/"
            f"{self.dbname}"
        )

    def stop(self) -> None:
        """``pg_ctl stop -m fast``: sessions are disconnected, the server goes away."""
        s = self.server
        s._run([str(s.bindir / "pg_ctl"), "-D", str(s.datadir), "-m", "fast", "-w", "-t", "30",
                "stop"])  # fmt: skip

    def start(self) -> None:
        s = self.server
        s._run([str(s.bindir / "pg_ctl"), "-D", str(s.datadir), "-w", "-t", "30",
                "-l", str(s.root / "server.log"), "-o", f"-p {s.port}", "start"])  # fmt: skip

    def accepts_connections(self) -> bool:
        try:
            self.server.admin_connect(self.dbname).close()
        except Exception:
            return False
        return True

    def close(self) -> None:
        self.server.stop()
