"""A consumer application for the zero-downtime proof.

A pooled Postgres client whose connections log in with the credential it reads through
SecretsManager; it follows rotations (invalidate, rebuild the pool, acknowledge) and counts every
query that fails. Configured by environment (APP_*) and Keyturn's own variables; writes its
figures as JSON to APP_STATS twice a second; stops when APP_STOP exists or after APP_SECONDS.
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
STATS = Path(os.environ["APP_STATS"])
STOP = Path(os.environ["APP_STOP"])
THREADS = int(os.environ.get("APP_THREADS", "4"))
ACK_DELAY = float(os.environ.get("APP_ACK_DELAY", "0"))
SECONDS = float(os.environ.get("APP_SECONDS", "300"))

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
    "started": time.time(),
    "pid": os.getpid(),
}


def on_rotate(event: RotationEvent) -> None:
    if ACK_DELAY:
        time.sleep(ACK_DELAY)
    engine.dispose()
    with engine.connect() as conn:  # prove the new credential before acknowledging
        conn.execute(text("SELECT 1"))
    with lock:
        stats["moves"].append(
            {"version": event.version, "at": time.time(), "user": manager.get(SECRET)["username"]}
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
        time.sleep(0.002)


def main() -> None:
    manager.on_rotate(SECRET, on_rotate)
    manager.get(SECRET)
    agent = manager.subscribe(heartbeat_ttl=float(os.environ.get("APP_HEARTBEAT", "3")))
    stop = threading.Event()
    threads = [threading.Thread(target=worker, args=(stop,), daemon=True) for _ in range(THREADS)]
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
