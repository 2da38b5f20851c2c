"""Leases under real worker processes (issue 11, findings 1 and 2).

- A worker frozen in the middle of a run's restart step (SIGSTOP of its whole process group)
  past its lease, then thawed (SIGCONT) after another worker took the run over and finished it:
  the frozen worker runs no restart command and commits nothing. Side effects are counted: each
  restart command appends ``<pool process pid> <command>`` to a file.
- A worker whose clock runs 10 minutes ahead (libfaketime: the whole process, Celery and the
  drivers included, sees the skewed time) neither claims a schedule due in 3 minutes nor takes a
  live lease: leases, due claims and recovery compare the database's time.
"""

from __future__ import annotations

import glob
import os
import signal
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from rotation.ledger.db import Ledger
from rotation.ledger.models import RunEvent, Schedule
from rotation.run.runtime import Runtime
from rotation.scheduler.dispatcher import Dispatcher
from tests.backends.cluster import Cluster, store
from tests.faults.helpers import (
    FINAL,
    cluster_env,
    deadline_wait,
    new_cluster,
    running,
    runs_of,
    write_policy,
)

COMMANDS = """
policies:
  - name: frozen
    secret: svc/frozen
    kind: random
    schedule: {{every: 30d}}
    retire_after: 0s
    max_attempts: 5
    restart:
      strategy: command
      timeout: 2s
      commands:
        - [sh, -c, 'echo "$PPID 1" >> {log}']
        - [sh, -c, 'echo "$PPID 2" >> {log}']
        - [sh, -c, 'echo "$PPID 3" >> {log}']
"""


def lines(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    return [(a, b) for a, b in (line.split() for line in path.read_text().splitlines())]


def restart_events(ledger: Ledger, run_id: int) -> list[tuple[str, str, str | None]]:
    with ledger.sessions() as session:
        return [
            (e.outcome, e.to_state, e.worker)
            for e in session.scalars(
                select(RunEvent)
                .where(RunEvent.run_id == run_id, RunEvent.step == "restart")
                .order_by(RunEvent.id)
            )
        ]


def test_a_worker_frozen_past_its_lease_commits_nothing_and_runs_no_further_command(
    tmp_path: Path, ledger_url: str, ledger: Ledger
) -> None:
    log, marker = tmp_path / "commands.log", tmp_path / "paused"
    env = cluster_env(tmp_path, ledger_url, KEYTURN_LEASE_SECONDS="8")
    cluster = new_cluster(env, tmp_path)
    with running(cluster):
        store(cluster).write("svc/frozen", "initial")
        frozen = cluster.start(
            "worker",
            {"KEYTURN_TEST_PAUSE": "restart:before", "KEYTURN_TEST_PAUSE_FILE": str(marker)},
        )
        cluster.start("beat")
        write_policy(cluster, "frozen", COMMANDS.format(log=log))
        deadline_wait(marker.exists, 60, "the first worker to hold the restart step", cluster.logs)
        os.killpg(frozen.pid, signal.SIGSTOP)  # main process, pool processes: all frozen
        frozen_at = time.monotonic()
        frozen_pid = marker.read_text().strip()
        try:
            cluster.start("worker")  # takes the run over once the lease expired
            deadline_wait(
                lambda: runs_of(ledger, "svc/frozen")[0].state in FINAL,
                90,
                "the second worker to finish the run",
                cluster.logs,
            )
            took_over = time.monotonic() - frozen_at
            marker.unlink()  # the frozen worker's step goes on as soon as it thaws
        finally:
            os.killpg(frozen.pid, signal.SIGCONT)
        time.sleep(8)  # every chance to run its commands and commit

        (run,) = runs_of(ledger, "svc/frozen")
        assert run.state == "succeeded", (run.state, run.last_error, cluster.logs())
        by_frozen = [n for pid, n in lines(log) if pid == frozen_pid]
        by_others = [n for pid, n in lines(log) if pid != frozen_pid]
        assert by_frozen == [], (lines(log), cluster.logs())  # no command after the thaw
        assert by_others == ["1", "2", "3"], lines(log)
        assert store(cluster).read("svc/frozen").token == run.token  # the promotion stands
        events = restart_events(ledger, run.id)
        assert [(o, s) for o, s, _ in events] == [("ok", "restarted")], events
        assert all(frozen_pid not in (w or "") for _, _, w in events)
        print(f"frozen worker: taken over after {took_over:.1f} s; commands {lines(log)}")


# --- a worker clock minutes ahead ------------------------------------------------------------


def _libfaketime() -> str | None:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    return found[0] if found else None


def _skewed_worker(cluster: Cluster) -> tuple[str, Path]:
    """Start a worker 10 minutes ahead on a queue of its own; returns that queue and its log."""
    preload = _libfaketime()
    if preload is None:
        pytest.skip("libfaketime not installed (scripts/install-test-deps.sh installs faketime)")
    queue = f"kt-skewed-{uuid.uuid4().hex[:8]}"
    log = cluster.workdir / f"worker-{len(cluster.procs)}.log"
    cluster.start(
        "worker",
        {
            "LD_PRELOAD": preload,
            "FAKETIME": "+10m",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "KEYTURN_QUEUE": queue,
        },
    )
    return queue, log


def succeeded(log: Path, task: str) -> int:
    """How many ``task`` runs the worker writing ``log`` finished."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return sum(1 for line in text.splitlines() if f"Task {task}[" in line and "succeeded" in line)


EARLY = """
policies:
  - name: early
    secret: svc/early
    kind: random
    schedule: {every: 30d}
"""


def test_a_worker_clock_ten_minutes_ahead_claims_no_schedule_early(
    tmp_path: Path, ledger_url: str, ledger: Ledger
) -> None:
    cluster = new_cluster(cluster_env(tmp_path, ledger_url), tmp_path)
    with running(cluster):
        store(cluster).write("svc/early", "initial")
        write_policy(cluster, "early", EARLY)
        runtime = Runtime(Ledger(ledger_url), environ=cluster.env)
        try:
            Dispatcher(runtime, cluster.env["KEYTURN_SCHEDULES"]).sync_policies(runtime.clock())
            due = runtime.clock() + timedelta(minutes=3)  # database time
        finally:
            runtime.close()
        with ledger.transaction() as session:
            session.execute(
                update(Schedule).where(Schedule.secret == "svc/early").values(next_due_at=due)
            )
        queue, log = _skewed_worker(cluster)
        for _ in range(6):
            cluster.app.send_task("keyturn.dispatch_due", queue=queue)
            time.sleep(1)
        deadline_wait(
            lambda: succeeded(log, "keyturn.dispatch_due") >= 6,
            30,
            "the skewed worker to run its ticks",
            cluster.logs,
        )
        assert runs_of(ledger, "svc/early") == [], "a schedule was claimed 3 minutes early"
        with ledger.sessions() as session:
            schedule = session.get(Schedule, "svc/early")
            assert schedule is not None and schedule.next_due_at == due


HELD = """
policies:
  - name: held
    secret: svc/held
    kind: random
    schedule: {{every: 30d}}
    retire_after: 0s
    restart: {{strategy: command, timeout: 5s, commands: [[sh, -c, 'echo stolen >> {log}']]}}
"""


def test_a_worker_clock_ten_minutes_ahead_takes_no_live_lease(
    tmp_path: Path, ledger_url: str, ledger: Ledger
) -> None:
    side_effect, marker = tmp_path / "stolen.log", tmp_path / "paused"
    env = cluster_env(tmp_path, ledger_url, KEYTURN_LEASE_SECONDS="30")
    cluster = new_cluster(env, tmp_path)
    with running(cluster):
        store(cluster).write("svc/held", "initial")
        cluster.start(
            "worker",
            {"KEYTURN_TEST_PAUSE": "restart:before", "KEYTURN_TEST_PAUSE_FILE": str(marker)},
        )
        cluster.start("beat")
        write_policy(cluster, "held", HELD.format(log=side_effect))
        deadline_wait(marker.exists, 60, "the holder to park at restart", cluster.logs)
        (run,) = runs_of(ledger, "svc/held")
        assert run.state == "promoted" and run.lease_owner is not None
        queue, log = _skewed_worker(cluster)
        cluster.app.send_task("keyturn.advance", args=(run.id, "promoted"), queue=queue)
        cluster.app.send_task("keyturn.advance", args=(run.id, None), queue=queue)
        deadline_wait(
            lambda: succeeded(log, "keyturn.advance") >= 2,
            30,
            "the skewed worker to receive both messages",
            cluster.logs,
        )
        time.sleep(3)
        (after,) = runs_of(ledger, "svc/held")
        assert not side_effect.exists(), "the skewed worker ran the restart command"
        assert (after.lease_owner, after.attempt, after.state) == (
            run.lease_owner,
            run.attempt,
            "promoted",
        ), "the skewed worker took a live lease"
