"""Soak: 10,000 ``random`` rotations through two real worker processes and a beat.

Redis key count stays flat, the ledger holds exactly the rows the rotations should leave (no
duplicate, no failure, no retry), the audit chain verifies, every secret's current value is its
last run's, and the workers' memory stays within 10% of what it was after warm-up.

``KEYTURN_SOAK_ROTATIONS`` (default 10000) sets the count, ``KEYTURN_SOAK_SECONDS`` (default
1800) the wall-time bound. Run with ``make soak`` (``pytest -m soak tests/faults``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, inspect, select

from rotation.access.audit import verify
from rotation.ledger.db import Ledger
from rotation.ledger.models import Run, RunEvent, Schedule
from rotation.values import Stage
from tests.backends.cluster import Cluster, store
from tests.faults.leakscan import start_celery

ROTATIONS = int(os.environ.get("KEYTURN_SOAK_ROTATIONS", "10000"))
WALL_SECONDS = float(os.environ.get("KEYTURN_SOAK_SECONDS", "1800"))
#: A Redis database of its own, flushed at start, so DBSIZE counts only this test's keys.
SOAK_BROKER = os.environ.get("KEYTURN_SOAK_REDIS", "redis://127.0.0.1:6379/13")
SECRETS = 100
SAMPLE_EVERY = 5.0
WARM_UP = max(1, ROTATIONS // 10)
#: Keys that may come and go with the load (the queue list, unacked bookkeeping, a mutex).
KEY_SLACK = 3
STEPS = ["created", "applied", "tested", "promoted", "restarted", "retired", "succeeded"]

POLICY = """
policies:
  - name: soak
    secrets: ["soak/key_*"]
    kind: random
    schedule: {{every: 1s}}
    retire_after: 0s
    max_attempts: 5
    paused: {paused}
"""

pytestmark = [pytest.mark.soak, pytest.mark.timeout(int(WALL_SECONDS) + 600)]


@dataclass
class Sample:
    at: float
    succeeded: int
    bad: int
    keys: int
    queued: int
    rss_kib: dict[int, int]

    @property
    def rss_total(self) -> int:
        return sum(self.rss_kib.values())


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants (a worker's main process and its pool children)."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(parents.get(pid, []))
    return tree


def counts(ledger: Ledger) -> tuple[int, int, int]:
    """(succeeded, failed or needs_attention, open) runs."""
    with ledger.sessions() as session:
        rows = dict(session.execute(select(Run.state, func.count()).group_by(Run.state)).all())
    succeeded = rows.pop("succeeded", 0)
    bad = rows.pop("failed", 0) + rows.pop("needs_attention", 0)
    return succeeded, bad, sum(rows.values())


def test_soak_rotations_leave_flat_memory_keys_and_an_exact_ledger(
    cluster: Cluster, ledger: Ledger
) -> None:
    client = redis.Redis.from_url(SOAK_BROKER)
    client.flushdb()
    cluster.env.update(
        KEYTURN_BROKER_URL=SOAK_BROKER,
        KEYTURN_LEASE_SECONDS="60",
        KEYTURN_REDELIVER_SECONDS="60",
        KEYTURN_TICK_SECONDS="1",
    )
    queue = cluster.env["KEYTURN_QUEUE"]
    backend = store(cluster)
    for i in range(SECRETS):
        backend.write(f"soak/key_{i:03d}", f"initial-soak-value-{i:03d}")
    policy = Path(cluster.env["KEYTURN_SCHEDULES"]) / "soak.yaml"
    policy.write_text(POLICY.format(paused="false"))
    workers = [start_celery(cluster, "worker", "INFO", concurrency=1) for _ in range(2)]
    start_celery(cluster, "beat", "INFO")

    began = time.monotonic()
    deadline = began + WALL_SECONDS
    samples: list[Sample] = []
    warm: Sample | None = None

    def sample() -> Sample:
        succeeded, bad, _ = counts(ledger)
        rss = {pid: rss_kib(pid) for w in workers for pid in process_tree(w.pid)}
        s = Sample(
            time.monotonic() - began,
            succeeded,
            bad,
            int(client.dbsize()),
            int(client.llen(queue)),
            rss,
        )
        samples.append(s)
        return s

    try:
        while True:
            s = sample()
            assert s.bad == 0, f"{s.bad} runs failed\n{cluster.logs()}"
            assert all(w.poll() is None for w in workers), f"a worker died\n{cluster.logs()}"
            if warm is None and s.succeeded >= WARM_UP:
                warm = s
            if s.succeeded >= ROTATIONS:
                break
            assert time.monotonic() < deadline, (
                f"only {s.succeeded} of {ROTATIONS} rotations in {WALL_SECONDS:.0f}s\n"
                f"{cluster.logs()}"
            )
            time.sleep(SAMPLE_EVERY)
        # stop starting runs; let the ones in flight finish
        policy.write_text(POLICY.format(paused="true"))
        drain = time.monotonic() + 120
        while counts(ledger)[2] and time.monotonic() < drain:
            time.sleep(1)
        time.sleep(SAMPLE_EVERY)  # a few idle ticks: nothing new may start
        end = sample()
    finally:
        client.close()
    assert warm is not None
    elapsed = end.at

    # --- the ledger: exactly what 7-step rotations leave --------------------------------------
    with ledger.sessions() as session:
        runs_total = session.scalar(select(func.count()).select_from(Run))
        states = dict(session.execute(select(Run.state, func.count()).group_by(Run.state)).all())
        events_total = session.scalar(select(func.count()).select_from(RunEvent))
        outcomes = dict(
            session.execute(select(RunEvent.outcome, func.count()).group_by(RunEvent.outcome)).all()
        )
        per_run = dict(
            session.execute(
                select(func.count(), func.count(func.distinct(RunEvent.run_id))).where(
                    RunEvent.outcome == "ok"
                )
            ).all()
        )
        odd_runs = session.scalar(
            select(func.count()).select_from(
                select(RunEvent.run_id)
                .group_by(RunEvent.run_id)
                .having(func.count() != len(STEPS))
                .subquery()
            )
        )
        first_created, last_finished = session.execute(
            select(func.min(Run.created_at), func.max(Run.finished_at))
        ).one()
        schedules = session.scalar(select(func.count()).select_from(Schedule))
        last_runs = dict(
            session.execute(
                select(Run.secret, Run.token).where(
                    Run.id.in_(select(func.max(Run.id)).group_by(Run.secret))
                )
            ).all()
        )
        has_audit = inspect(session.get_bind()).has_table("audit_records")
        audit_rows = audit_ok = None
        if has_audit:
            from rotation.ledger.models import AuditRecord

            audit_rows = session.scalar(select(func.count()).select_from(AuditRecord))
            report = verify(session)
            audit_ok = report.ok
    # the runs' own span, as the ledger saw it
    span = (last_finished - first_created).total_seconds()
    rate = runs_total / span

    keys = [s.keys for s in samples]
    print(
        f"\nsoak: {runs_total:,} rotations ({len(STEPS)} steps each) in {span:.0f}s of rotating "
        f"= {rate:.1f} rotations/s ({rate * len(STEPS):.0f} steps/s); wall {elapsed:.0f}s; "
        f"2 workers x -c 1, {SECRETS} secrets, every 1s"
    )
    print(
        f"  Redis keys: after warm-up {warm.keys}, min {min(keys)}, max {max(keys)}, "
        f"end {end.keys}; queue length max {max(s.queued for s in samples)}"
    )
    print(
        f"  worker RSS (MiB, {len(end.rss_kib)} processes): after warm-up "
        f"{warm.rss_total / 1024:.1f}, max {max(s.rss_total for s in samples) / 1024:.1f}, "
        f"end {end.rss_total / 1024:.1f} ({(end.rss_total / warm.rss_total - 1) * 100:+.1f}%)"
    )
    print(
        f"  ledger: runs {runs_total:,} {states}, run_events {events_total:,} {outcomes}, "
        f"audit_records {audit_rows} (chain ok: {audit_ok}); {len(samples)} samples"
    )
    for s in [*samples[:: max(1, len(samples) // 12)], end]:
        print(
            f"    t={s.at:6.0f}s succeeded={s.succeeded:6d} keys={s.keys} queued={s.queued:4d} "
            f"rss={s.rss_total / 1024:.1f}MiB"
        )

    assert runs_total >= ROTATIONS
    assert states == {"succeeded": runs_total}, states  # no failure, no run left open
    assert outcomes == {"ok": len(STEPS) * runs_total}, outcomes  # no retry, no wait
    assert events_total == len(STEPS) * runs_total
    assert per_run == {len(STEPS) * runs_total: runs_total}, per_run
    assert odd_runs == 0
    if has_audit:
        assert audit_rows == len(STEPS) * runs_total  # one record per transition
        assert audit_ok
    assert schedules == SECRETS and len(last_runs) == SECRETS
    for secret, token in last_runs.items():  # each secret ends on its last run's value
        current = backend.read(secret)
        assert current.token == token, secret
        assert not [v for v in backend.versions(secret) if Stage.PENDING in v.stages]

    assert end.keys <= warm.keys + KEY_SLACK, keys
    assert max(keys) <= warm.keys + KEY_SLACK + 2, keys
    assert end.rss_total <= warm.rss_total * 1.10, (warm.rss_kib, end.rss_kib)
    assert set(end.rss_kib) == set(warm.rss_kib)  # the same processes: none was replaced
