"""A consumer application for the zero-downtime proof.

A pooled Postgres client whose connections log in with the credential it reads through
SecretsManager; it follows rotations (invalidate, rebuild the pool, acknowledge) and counts every
query that fails. Configured by environment (APP_*) and Keyturn's own variables; writes its
figures as JSON to APP_STATS twice a second; stops when APP_STOP exists or after APP_SECONDS.
APP_REFUSE_USER makes its callback raise when asked to move to that role, APP_REFUSE_PROMOTIONS on
every promotion (a consumer that cannot use the new credential); the first and last failure
times tell how long queries failed.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import create_engine, text

from rotation import SecretsManager
from rotation.client.events import RotationEvent

SECRET = os.environ["APP_SECRET"]
#: A role this application cannot use (its callback raises before moving to it).
REFUSE_USER = os.environ.get("APP_REFUSE_USER", "")
#: Set: the callback raises on every promotion (it follows rollbacks).
REFUSE_PROMOTIONS = bool(os.environ.get("APP_REFUSE_PROMOTIONS"))
STATS = Path(os.environ["APP_STATS"])
STOP = Path(os.environ["APP_STOP"])
THREADS = int(os.environ.get("APP_THREADS", "4"))
ACK_DELAY = float(os.environ.get("APP_ACK_DELAY", "0"))
SECONDS = float(os.environ.get("APP_SECONDS", "300"))
#: When set, a thread also opens a fresh connection this often (seconds), outside the pool:
#: every login is timed, so the time new logins fail is measured to a few milliseconds.
LOGIN_EVERY = float(os.environ.get("APP_LOGIN_EVERY", "0"))

manager = SecretsManager.from_env()


def connect() -> psycopg.Connection[Any]:
    cred = manager.get(SECRET)
    return psycopg.connect(
        host=cred["host"],
        port=cred["port"],
        dbname=cred["dbname"],
        user=cred["username"],
        password=cred["password"],
        connect_timeout=5,
    )


# a short recycle makes connections log in again all the time: every login is a test
engine = create_engine(
    "postgresql+psycopg://", creator=connect, pool_size=THREADS, max_overflow=0, pool_recycle=0.5
)
lock = threading.Lock()
stats: dict[str, Any] = {
    "ok": 0,
    "failed": 0,
    "errors": [],
    "moves": [],
    "first_failure": None,
    "last_failure": None,
    "logins": 0,
    "login_failed": 0,
    "first_login_failure": None,
    "last_login_failure": None,
    "started": time.time(),
    "pid": os.getpid(),
}


def on_rotate(event: RotationEvent) -> None:
    if REFUSE_USER and manager.get(SECRET)["username"] == REFUSE_USER:
        raise PermissionError(f"this application cannot use role {REFUSE_USER}")
    if REFUSE_PROMOTIONS and event.rollback_of is None:
        raise PermissionError("this application cannot use the new credential")
    if ACK_DELAY:
        time.sleep(ACK_DELAY)
    engine.dispose()
    with engine.connect() as conn:  # prove the new credential before acknowledging
        conn.execute(text("SELECT 1"))
    with lock:
        stats["moves"].append(
            {
                "version": event.version,
                "at": time.time(),
                "user": manager.get(SECRET)["username"],
                "rollback_of": event.rollback_of,
            }
        )


def worker(stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            with lock:
                stats["ok"] += 1
        except Exception as exc:
            with lock:
                stats["failed"] += 1
                stats["errors"] = (stats["errors"] + [type(exc).__name__])[-5:]
                stats["first_failure"] = stats["first_failure"] or time.time()
                stats["last_failure"] = time.time()
        time.sleep(0.002)


def login_prober(stop: threading.Event) -> None:
    while not stop.wait(LOGIN_EVERY):
        try:
            connect().close()
            with lock:
                stats["logins"] += 1
        except Exception:
            with lock:
                stats["login_failed"] += 1
                stats["first_login_failure"] = stats["first_login_failure"] or time.time()
                stats["last_login_failure"] = time.time()


def main() -> None:
    manager.on_rotate(SECRET, on_rotate)
    manager.get(SECRET)
    agent = manager.subscribe(heartbeat_ttl=float(os.environ.get("APP_HEARTBEAT", "3")))
    stop = threading.Event()
    threads = [threading.Thread(target=worker, args=(stop,), daemon=True) for _ in range(THREADS)]
    if LOGIN_EVERY:
        threads.append(threading.Thread(target=login_prober, args=(stop,), daemon=True))
    for t in threads:
        t.start()
    deadline = time.monotonic() + SECONDS
    while not STOP.exists() and time.monotonic() < deadline:
        with lock:
            snapshot = {
                **stats,
                "connected": agent.connected.is_set(),
                "user": manager.get(SECRET)["username"],
                "now": time.time(),
            }
        tmp = STATS.with_suffix(".tmp")
        tmp.write_text(json.dumps(snapshot))
        tmp.replace(STATS)
        time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(5)
    with lock:
        STATS.write_text(
            json.dumps({**stats, "stopped": time.time(), "user": manager.get(SECRET)["username"]})
        )
    manager.close()
    engine.dispose()


if __name__ == "__main__":
    main()
