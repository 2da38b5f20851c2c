"""The application side of docs/guide-postgres.md: a connection pool that logs in with the
Postgres credential Keyturn rotates, and moves to each new one without a failed query.

Run it with the environment of an application, which is not a Keyturn worker's:

    SECRETS_PROVIDER     the backend the secret lives in (vault, aws, azure; local to try it)
    ...                  that backend's own variables (VAULT_ADDR and a login, AWS_REGION, ...)
    KEYTURN_REDIS_URL    the rollout bus: promotions arrive there, acknowledgements go back
    APP_SECRET           the secret's name (default db/orders_app)

and never KEYTURN_DATABASE_URL: that is Keyturn's ledger of rotations, not the application's
database, and an application has no business there. It prints one line a second until
SIGTERM or Ctrl-C: queries that worked, queries that failed, the login in use.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import psycopg
from sqlalchemy import create_engine, text

from rotation import get_secrets_manager

SECRET = os.environ.get("APP_SECRET", "db/orders_app")
manager = get_secrets_manager()  # one per process, configured from the environment


def connect() -> psycopg.Connection[Any]:
    """A new connection with the secret's current value (cached; the agent drops it at a
    promotion, so the next login reads the new one)."""
    credential = manager.get(SECRET)
    return psycopg.connect(
        host=credential["host"],
        port=credential["port"],
        dbname=credential["dbname"],
        user=credential["username"],  # the secret says "username"; libpq says "user"
        password=credential["password"],
        sslmode=credential.get("sslmode", "prefer"),
        connect_timeout=5,
    )


engine = create_engine("postgresql+psycopg://", creator=connect, pool_size=4, max_overflow=0)


def on_rotate(event: Any) -> None:
    """The new value is current and the old one still works: rebuild the pool on the new
    login, and prove it before Keyturn hears our acknowledgement (raising here reports a
    failure, and the rotation is rolled back)."""
    engine.dispose()
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    print(f"moved to version {event.version} of {event.secret}", flush=True)


def main() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    manager.on_rotate(SECRET, on_rotate)
    manager.get(SECRET)  # the agent follows the secrets this manager has read
    manager.subscribe()  # KEYTURN_REDIS_URL: heartbeats, promotions, acknowledgements
    ok = failed = 0
    last = time.monotonic()
    try:
        while not stop.is_set():
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                ok += 1
            except Exception as exc:  # count it: the point is that this stays at 0
                failed += 1
                print(f"query failed: {type(exc).__name__}", flush=True)
            if time.monotonic() - last >= 1:
                user = manager.get(SECRET)["username"]
                print(f"ok={ok} failed={failed} user={user}", flush=True)
                last = time.monotonic()
            time.sleep(0.01)
    except KeyboardInterrupt:
        pass
    finally:
        manager.close()  # withdraws this consumer at once
        engine.dispose()
        print(f"stopped: ok={ok} failed={failed}", flush=True)


if __name__ == "__main__":
    main()
