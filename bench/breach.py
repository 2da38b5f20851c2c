"""Breach response: every secret rotated at once through real Celery workers, timed.

``N`` secrets (default 10,000) in a local store (``SECRETS_PROVIDER=local``, a temp dir), one
``random`` policy governing them all (scheduled, not due), a scratch Postgres ledger, and one
``celery -A worker worker -c 2`` (two prefork children) over Redis. The bench sends the
manual rotate-all request -- the ``keyturn.rotate_all`` task, by name, unsigned (it acts as
the ``api`` principal) -- and polls the ledger until every run has ended. Like beat, it sends a
dispatcher tick every 5 s (nothing is due; the tick only wakes runs left waiting).

Figure: the time from the request to the last run ``succeeded`` (read from the ledger: the
request's send time, on this host, to ``max(runs.finished_at)``; both clocks are this
machine's). Target: <= 5 minutes, with every run ``succeeded``. Exit status 1 when missed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import check, scratch_database
from sqlalchemy import func, select, update
from throughput import Celery, progress

from rotation.ledger.db import Ledger
from rotation.ledger.models import Run, Schedule
from rotation.providers.local import LocalProvider, generate_key
from rotation.run.runtime import Runtime
from rotation.scheduler.dispatcher import Dispatcher

TARGET = timedelta(minutes=5)
PREFIX = "breach/"
POLICY = """
policies:
  - name: breach
    secrets: ["breach/*"]
    kind: random
    schedule: {every: 30d}
    retire_after: 0s
    max_attempts: 5
"""


def make_store(root: Path, count: int) -> tuple[Path, str]:
    key = generate_key()
    pristine = root / "pristine"
    provider = LocalProvider(pristine, key=key)
    for i in range(count):
        provider.write(f"{PREFIX}key_{i:05d}", f"initial-{i}")
    provider.close()
    return pristine, key


def schedule_all(url: str, store: Path, key: str, schedules: Path, count: int) -> None:
    """Sync the policy into the ledger (one schedule per secret), then make none due."""
    environ = {
        "SECRETS_PROVIDER": "local",
        "KEYTURN_LOCAL_DIR": str(store),
        "KEYTURN_LOCAL_KEY": key,
    }
    runtime = Runtime(Ledger(url), environ=environ, worker_id="bench-breach")
    try:
        Dispatcher(runtime, schedules).sync_policies(runtime.clock())
        with runtime.ledger.transaction() as session:
            session.execute(
                update(Schedule)
                .where(Schedule.secret.startswith(PREFIX))
                .values(next_due_at=func.now() + timedelta(days=30))
            )
            scheduled = session.scalar(
                select(func.count()).where(Schedule.secret.startswith(PREFIX))
            )
    finally:
        runtime.close()
    if scheduled != count:
        raise RuntimeError(f"{scheduled} of {count} secrets scheduled")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secrets", type=int, default=10_000, help="how many (default 10000)")
    parser.add_argument("--concurrency", type=int, default=2, help="worker -c (default 2)")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after (s)")
    args = parser.parse_args()
    cores = os.cpu_count()
    print(f"machine: {cores} cores")
    with tempfile.TemporaryDirectory(prefix="keyturn-breach-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        t0 = time.monotonic()
        pristine, key = make_store(root, args.secrets)
        url = stack.enter_context(scratch_database("breach"))
        celery = Celery(root, pristine, key, url, 1, args.concurrency)
        stack.callback(celery.close)
        (celery.schedules / "breach.yaml").write_text(POLICY)
        schedule_all(url, celery.store, key, celery.schedules, args.secrets)
        print(f"  set up {args.secrets} secrets and schedules in {time.monotonic() - t0:.0f} s")
        ledger = Ledger(url)
        stack.callback(ledger.dispose)

        sent = datetime.now(UTC)
        started = time.monotonic()
        celery.app.send_task("keyturn.rotate_all", args=(PREFIX,), queue=celery.queue)
        next_tick = started + 5.0
        last_report = started
        total = finished = failed = 0
        while time.monotonic() - started < args.timeout:
            total, finished, failed = progress(ledger, PREFIX)
            if total >= args.secrets and finished == total:
                break
            now = time.monotonic()
            if now >= next_tick:  # as beat would
                celery.tick()
                next_tick = now + 5.0
            if now - last_report >= 30.0:
                print(f"  {now - started:5.0f} s: {total} runs, {finished} ended, {failed} not ok")
                last_report = now
            time.sleep(0.5)
        with ledger.sessions() as session:
            last = session.scalar(
                select(func.max(Run.finished_at)).where(Run.secret.startswith(PREFIX))
            )
        elapsed = (last - sent).total_seconds() if last is not None else float("inf")
        succeeded = finished - failed
        rate = succeeded / elapsed if elapsed > 0 else 0.0
        print(
            f"{args.secrets} secrets, rotate-all through celery -A worker worker "
            f"-c {args.concurrency} (local store, Postgres ledger, {cores} cores)"
        )
        print(
            f"  {succeeded} succeeded, {failed} failed or need attention, of {total} runs; "
            f"request -> last run ended: {elapsed:.0f} s ({rate:.1f} rotations/s); "
            f"target <= {TARGET.total_seconds():.0f} s"
        )
        ok = check(
            total == args.secrets and succeeded == args.secrets,
            f"every secret rotated ({succeeded}/{args.secrets} succeeded)",
        )
        ok &= check(
            elapsed <= TARGET.total_seconds(),
            f"{args.secrets} rotations in {elapsed:.0f} s (target <= {TARGET.total_seconds():.0f})",
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
