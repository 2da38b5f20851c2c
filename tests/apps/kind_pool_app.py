"""A consumer application for the zero-downtime proofs of the ``mysql`` and ``redis`` kinds.

Like tests/apps/pool_app.py (Postgres): a pooled client whose connections log in with the
credential read through SecretsManager, following rotations (invalidate, rebuild the pool,
prove the new credential, acknowledge) and counting every failed query or command. Connections
are recycled twice a second, so logins happen all the time. ``APP_KIND`` is ``mysql`` or
``redis``; the other APP_* variables are pool_app's.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rotation import SecretsManager
from rotation.client.events import RotationEvent

KIND = os.environ["APP_KIND"]
SECRET = os.environ["APP_SECRET"]
STATS = Path(os.environ["APP_STATS"])
STOP = Path(os.environ["APP_STOP"])
THREADS = int(os.environ.get("APP_THREADS", "4"))
SECONDS = float(os.environ.get("APP_SECONDS", "300"))

manager = SecretsManager.from_env()


class MySqlPool:
    def __init__(self) -> None:
        import pymysql
        from sqlalchemy import create_engine, text

        def connect() -> Any:
            cred = manager.get(SECRET)
            return pymysql.connect(
                host=cred["host"],
                port=int(cred["port"]),
                user=cred["username"],
                password=cred["password"],
                database=cred.get("dbname"),
                connect_timeout=5,
            )

        self.text = text
        self.engine = create_engine(
            "mysql+pymysql://", creator=connect, pool_size=THREADS, max_overflow=0,
            pool_recycle=0.5,
        )  # fmt: skip

    def query(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(self.text("SELECT 1"))

    def rebuild(self) -> None:
        self.engine.dispose()

    def recycle(self) -> None:
        pass  # pool_recycle does it


class RedisPool:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.client = self._client()

    def _client(self) -> Any:
        import redis

        cred = manager.get(SECRET)
        return redis.Redis(
            host=cred["host"],
            port=int(cred["port"]),
            username=cred["username"],
            password=cred["password"],
            socket_timeout=5,
            max_connections=THREADS * 2,
        )

    def query(self) -> None:
        with self.lock:
            client = self.client
        client.incr("app:counter")

    def rebuild(self) -> None:
        with self.lock:
            old, self.client = self.client, self._client()
        old.close()

    def recycle(self) -> None:
        with self.lock:
            client = self.client
        client.connection_pool.disconnect(inuse_connections=False)  # they log in again


pool: Any = MySqlPool() if KIND == "mysql" else RedisPool()
lock = threading.Lock()
stats: dict[str, Any] = {"ok": 0, "failed": 0, "errors": [], "moves": [], "started": time.time()}


def on_rotate(event: RotationEvent) -> None:
    pool.rebuild()
    pool.query()  # prove the new credential before acknowledging
    with lock:
        stats["moves"].append({"version": event.version, "at": time.time()})


def loop(stop: threading.Event, body: Callable[[], None], pause: float, counted: bool) -> None:
    while not stop.is_set():
        try:
            body()
            if counted:
                with lock:
                    stats["ok"] += 1
        except Exception as exc:
            with lock:
                stats["failed"] += 1
                stats["errors"] = (stats["errors"] + [type(exc).__name__])[-5:]
        time.sleep(pause)


def main() -> None:
    manager.on_rotate(SECRET, on_rotate)
    agent = manager.subscribe(heartbeat_ttl=3)
    stop = threading.Event()
    threads = [
        threading.Thread(target=loop, args=(stop, pool.query, 0.002, True), daemon=True)
        for _ in range(THREADS)
    ]
    threads.append(
        threading.Thread(target=loop, args=(stop, pool.recycle, 0.5, False), daemon=True)
    )
    for t in threads:
        t.start()
    deadline = time.monotonic() + SECONDS
    while not STOP.exists() and time.monotonic() < deadline:
        with lock:
            snapshot = {**stats, "connected": agent.connected.is_set(), "now": time.time()}
        tmp = STATS.with_suffix(".tmp")
        tmp.write_text(json.dumps(snapshot))
        tmp.replace(STATS)
        time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(5)
    with lock:
        STATS.write_text(json.dumps({**stats, "stopped": time.time()}))
    manager.close()


if __name__ == "__main__":
    main()
