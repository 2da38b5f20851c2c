"""Restart Redis, restart Postgres, in the middle of rotations: every run still completes.

Common setup: one ``celery -A worker worker`` (-c 2) and one ``beat`` (tick 1 s), local store, six
``random`` secrets under one glob policy, all due at once. Each run's restart step runs a
``sleep`` command, and its retire step waits out a grace, so the outage can be aimed at a moment.
The outage lasts 5 s; the service then starts again on the same port (and data directory).
Expected after every outage: all 6 runs ``succeeded`` within 90 s, exactly one new version each
(2 versions, current carries the run's token, previous is the initial value, nothing pending),
one run per secret, and the worker and beat processes still running (they reconnect, they do
not die).

Scenario — Redis restart while every run waits (issue 7: "Restart Redis mid-run").
- What: a throwaway ``redis-server`` (no persistence) on a free port is the broker and rollout
  bus. Redis is SIGKILLed once all six runs sit in ``restarted`` (waiting for the 6 s grace, no
  step executing), so queued messages are lost with it.
- Trials: 1 outage, 6 runs. Expected: as above.

Scenario — Redis restart while a step executes (a task is unacknowledged).
- What: as above, but Redis is SIGKILLed while a restart step (``sleep 3``) holds its lease;
  up to 3 such outages in a row (each once a restart step is executing again).
- Trials: up to 3 outages, 6 runs. Expected: as above. Found, intermittently (1 of the first
  ~8 outages of this kind): the worker process exits instead of reconnecting. Celery/kombu
  5.7.0: on connection loss the consumer closes the channel, which restores the unacknowledged
  message through a connection whose transport was already released: ``AttributeError:
  'NoneType' object has no attribute 'hostname'`` in ``kombu/transport/redis.py _connparams``,
  logged as "Unrecoverable error", then the worker shuts down. Marked xfail NON-strict: the
  crash is a race, so a strict xfail would fail the suite whenever the race is not hit.

Scenario — Postgres (ledger) restart while a step executes.
- What: the cluster on the shared Redis, its LEDGER on a throwaway Postgres
  (``start_pg_server`` + ``rotation.ledger.migrate.upgrade``); ``pg_ctl stop -m fast`` while a
  restart step (``sleep 3``) holds its lease, so that step's commit fails and the run must be
  recovered after its lease (6 s) expires; the ticks during the outage fail too.
- Trials: 1 outage, 6 runs. Expected: as above.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rotation.ledger.db import Ledger
from rotation.ledger.models import Run
from rotation.values import Stage
from tests.backends.cluster import Cluster, store
from tests.backends.pgserver import find_bindir
from tests.faults.helpers import (
    FINAL,
    LedgerServer,
    RedisServer,
    cluster_env,
    deadline_wait,
    new_cluster,
    running,
    runs_of,
    write_policy,
)

N = 6
OUTAGE_SECONDS = 5.0
SECRETS = [f"svc/key-{i:02d}" for i in range(N)]
POLICY = """
policies:
  - name: restarts
    secrets: ["svc/key-*"]
    kind: random
    schedule: {{every: 30d}}
    retire_after: {grace}
    restart: {{strategy: command, commands: [["sleep", "{sleep}"]], timeout: 4s}}
    max_attempts: 5
"""
#: Steps must finish well inside the lease, or a second worker process would redo them.
LEASE = {"KEYTURN_LEASE_SECONDS": "6"}
Moment = Callable[[list[Run]], bool]


def all_waiting(runs: list[Run]) -> bool:
    """Every run waits out its grace in ``restarted``: no step executes, no task is unacked."""
    return len(runs) == N and all(r.state == "restarted" and r.lease_owner is None for r in runs)


def a_step_executing(runs: list[Run]) -> bool:
    """A restart step (``sleep 3``) holds its lease: its task is executing, unacknowledged."""
    return any(r.state == "promoted" and r.lease_owner is not None for r in runs)


def _rotate_through_outage(
    cluster: Cluster,
    ledger: Ledger,
    stop: Callable[[], None],
    start: Callable[[], None],
    moment: Moment,
    *,
    grace: str,
    sleep: int,
    outages: int = 1,
) -> dict[str, object]:
    backend = store(cluster)
    for name in SECRETS:
        backend.write(name, f"initial-{name}")
    write_policy(cluster, "restarts", POLICY.format(grace=grace, sleep=sleep))
    worker = cluster.start("worker")
    beat = cluster.start("beat")
    states_at_outages: list[dict[str, int]] = []
    down_for: list[float] = []
    for index in range(outages):
        try:
            deadline_wait(
                lambda: moment(runs_of(ledger)),
                60 if index == 0 else 15,
                "the moment of the outage",
                cluster.logs,
                0.1,
            )
        except AssertionError:
            if index == 0:
                raise
            break  # the runs went past every such moment
        states_at_outages.append(dict(Counter(r.state for r in runs_of(ledger))))
        stop()
        down = time.monotonic()
        time.sleep(OUTAGE_SECONDS)  # the outage itself, not a synchronisation
        start()
        back = time.monotonic()
        down_for.append(round(back - down, 1))
        if worker.poll() is not None:
            break
    deadline_wait(
        lambda: (
            worker.poll() is not None
            or (len(rs := runs_of(ledger)) == N and all(r.state in FINAL for r in rs))
        ),
        90,
        "every run to finish after the outage",
        cluster.logs,
    )
    recovered_in = time.monotonic() - back
    # they reconnected rather than died
    assert worker.poll() is None, f"the worker died in the outage\n{cluster.logs()}"
    assert beat.poll() is None, f"beat died in the outage\n{cluster.logs()}"

    runs = runs_of(ledger)
    assert sorted(r.secret for r in runs) == SECRETS  # one run per secret
    assert {r.state for r in runs} == {"succeeded"}, [(r.secret, r.last_error) for r in runs]
    for run in runs:
        versions = backend.versions(run.secret)
        assert len(versions) == 2, (run.secret, versions)  # exactly one new version
        assert not [v for v in versions if Stage.PENDING in v.stages]
        current = backend.read(run.secret)
        assert current.token == run.token and current.value != f"initial-{run.secret}"
        assert backend.read(run.secret, stage=Stage.PREVIOUS).value == f"initial-{run.secret}"
    figures = {
        "states_at_outages": states_at_outages,
        "outages_s": down_for,
        "recovered_in_s": round(recovered_in, 1),
    }
    print(f"figures: {figures}")
    return figures


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    try:
        server = RedisServer.launch()
    except FileNotFoundError:
        pytest.skip("redis-server is not installed")
    yield server
    server.close()


def test_redis_restart_while_runs_wait(
    tmp_path: Path, ledger_url: str, ledger: Ledger, redis_server: RedisServer
) -> None:
    env = cluster_env(tmp_path, ledger_url, broker=redis_server.url, **LEASE)
    with running(new_cluster(env, tmp_path)) as cluster:
        _rotate_through_outage(
            cluster, ledger, redis_server.stop, redis_server.start, all_waiting, grace="6s", sleep=0
        )


@pytest.mark.xfail(
    strict=False,  # a race: hit in about 1 of 8 outages so far (see the module docstring)
    reason="intermittent: Celery/kombu 5.7.0 worker exits when the Redis broker drops while a "
    "task is "
    "unacknowledged (acks_late): Consumer.on_connection_error_after_connected -> "
    "Channel.close -> QoS.restore_unacked -> _connparams on a released connection: "
    "AttributeError: 'NoneType' object has no attribute 'hostname' ('Unrecoverable error'); "
    "the worker shuts down instead of reconnecting",
)
def test_redis_restart_while_a_step_executes(
    tmp_path: Path, ledger_url: str, ledger: Ledger, redis_server: RedisServer
) -> None:
    env = cluster_env(tmp_path, ledger_url, broker=redis_server.url, **LEASE)
    with running(new_cluster(env, tmp_path)) as cluster:
        _rotate_through_outage(
            cluster,
            ledger,
            redis_server.stop,
            redis_server.start,
            a_step_executing,
            grace="1s",
            sleep=3,
            outages=3,
        )


def test_postgres_ledger_restart_while_a_step_executes(tmp_path: Path) -> None:
    if find_bindir() is None:
        pytest.skip("no PostgreSQL server binaries")
    server = LedgerServer.launch()
    ledger = Ledger(server.url)
    try:
        env = cluster_env(tmp_path, server.url, **LEASE)
        with running(new_cluster(env, tmp_path)) as cluster:
            _rotate_through_outage(
                cluster, ledger, server.stop, server.start, a_step_executing, grace="1s", sleep=3
            )
    finally:
        ledger.dispose()
        server.close()
