"""Real Celery worker and beat processes for tests: the ``cluster`` fixture and its helpers.

Each cluster gets its own queue on the shared Redis, its own Postgres ledger (``ledger_url``),
its own local store and schedules directory; every process is killed at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import select

from rotation.access.requests import generate_key_pair
from rotation.ledger.db import Ledger
from rotation.ledger.models import Run
from rotation.providers.local import LocalProvider, generate_key

REPO = Path(__file__).resolve().parents[2]
BROKER = os.environ.get("KEYTURN_TEST_REDIS", "redis://127.0.0.1:6379/0")


class Cluster:
    """Worker and beat processes sharing one environment; all killed at the end."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.app = Celery(broker=BROKER)
        self.app.conf.update(broker_connection_retry_on_startup=True)

    def start(self, role: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        env = {**self.env, **(extra_env or {})}
        args = [sys.executable, "-m", "celery", "-A", "worker"]
        if role == "worker":
            args += [
                "worker",
                "-Q",
                env["KEYTURN_QUEUE"],
                "-c",
                "2",
                "--loglevel=INFO",
                "-n",
                f"w{len(self.procs)}-{uuid.uuid4().hex[:6]}@%h",
            ]
        else:
            args += ["beat", "--loglevel=INFO", "-s", str(self.workdir / f"beat-{len(self.procs)}")]
        log = open(self.workdir / f"{role}-{len(self.procs)}.log", "wb")
        proc = subprocess.Popen(
            args,
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def send(self, task: str, *args: object) -> None:
        self.app.send_task(task, args=args, queue=self.env["KEYTURN_QUEUE"])

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill(proc)
        self.app.close()

    def operator_env(self, principal: str) -> dict[str, str]:
        """The environment of a ``keyturn`` CLI signing as ``principal`` (its key pair is made
        on first use; the workers' keyring, ``KEYTURN_OPERATOR_KEYS``, gets the public half)."""
        keys = Path(self.env["KEYTURN_OPERATOR_KEYS"])
        private = keys / f"{principal}.key"
        if not private.exists():
            generate_key_pair(principal, keys)
        return {**self.env, "KEYTURN_OPERATOR_KEY": str(private)}

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.workdir.glob("*.log"))
        )


@pytest.fixture
def cluster(tmp_path: Path, ledger_url: str) -> Iterator[Cluster]:
    schedules = tmp_path / "schedules"
    schedules.mkdir()
    env = {
        **os.environ,
        "KEYTURN_DATABASE_URL": ledger_url,
        "KEYTURN_BROKER_URL": BROKER,
        "KEYTURN_QUEUE": f"kt-test-{uuid.uuid4().hex[:8]}",
        "SECRETS_PROVIDER": "local",
        "KEYTURN_LOCAL_DIR": str(tmp_path / "store"),
        "KEYTURN_LOCAL_KEY": generate_key(),
        "KEYTURN_SCHEDULES": str(schedules),
        "KEYTURN_OPERATOR_KEYS": str(tmp_path / "operator-keys"),
        "KEYTURN_TICK_SECONDS": "1",
        "KEYTURN_LEASE_SECONDS": "4",
        "KEYTURN_REDELIVER_SECONDS": "3",
        "PYTHONUNBUFFERED": "1",
    }
    c = Cluster(env, tmp_path)
    yield c
    c.stop()


def store(cluster: Cluster) -> LocalProvider:
    return LocalProvider(cluster.env["KEYTURN_LOCAL_DIR"], key=cluster.env["KEYTURN_LOCAL_KEY"])


def wait_for(
    predicate: Callable[[], object], timeout: float, cluster: Cluster, what: str
) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}\n{cluster.logs()}")


def runs(ledger: Ledger) -> list[Run]:
    with ledger.sessions() as session:
        return list(session.scalars(select(Run).order_by(Run.id)))
