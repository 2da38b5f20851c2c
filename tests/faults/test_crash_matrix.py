"""SIGKILL a worker at every step boundary: the run still completes with exactly one new version.

Scenario — crash matrix (issue 7: "SIGKILL a worker at every step boundary, several trials each:
every run completes, exactly one new version, the target accepts the current credential").

- What: real ``celery -A worker worker`` and ``beat`` processes (Redis broker, Postgres ledger,
  local store) rotate Postgres login credentials with the ``postgres`` rotator in alternating
  mode against a password-checking throwaway Postgres (``pg_database``). A worker started with
  ``KEYTURN_TEST_PAUSE=<step>:<phase>`` parks at that boundary of the step (``before``: the lease
  is taken, nothing done; ``after``: the step's effect is done, its transition not committed);
  the test SIGKILLs the worker's whole process group there, then starts a fresh worker; beat's
  recovery tick re-enqueues the run once its lease (3 s) expired.
- Trials: 7 steps (create, apply, test, promote, restart, retire, finish) x 2 phases x 2 trials
  = 28 runs, each on its own secret (``db/app-<phase><trial>``) and its own role pair; one
  cluster and one database per step.
- Expected, per trial: the kill left the run in the state the step leaves (nothing committed);
  after recovery the run ``succeeded``; the store holds exactly one new version (2 versions,
  current carries the run's token, previous is the initial value, nothing pending); the
  database accepts the current credential and refuses the initial one (retired). Per step: one
  run per secret (no duplicate run).
"""

from __future__ import annotations

import time
import uuid

import pytest

from rotation.ledger.db import Ledger
from rotation.values import Stage
from tests.backends.cluster import store
from tests.backends.pgserver import PgDatabase
from tests.faults.helpers import (
    FINAL,
    cluster_env,
    deadline_wait,
    new_cluster,
    running,
    runs_of,
    write_policy,
)

#: The step that leaves each state (rotation.run.steps.STEPS), by step name.
FROM_STATE = {
    "create": "pending",
    "apply": "created",
    "test": "applied",
    "promote": "tested",
    "restart": "promoted",
    "retire": "restarted",
    # a worker following the run commits finish with retire (rotation.run.steps.INSTANT): at
    # finish's boundary retire has run and neither is committed
    "finish": "restarted",
}
PHASES = ("before", "after")
TRIALS = 2

POLICY = """
policies:
  - name: crash-{n}
    secret: db/app-{n}
    kind: postgres
    schedule: {{every: 30d}}
    retire_after: 0s
    consumer_cache_ttl: 0s   # no consumer caches it here (the defaults rule)
    max_attempts: 5
    target: {{mode: alternating, admin_secret: db/admin, connect_timeout: 3}}
"""


@pytest.mark.parametrize("step", list(FROM_STATE))
def test_sigkill_at_step_boundary_then_recovery(
    step: str, tmp_path, ledger_url: str, ledger: Ledger, pg_database: PgDatabase
) -> None:
    cluster = new_cluster(cluster_env(tmp_path, ledger_url), tmp_path)
    with running(cluster):
        backend = store(cluster)
        backend.write("db/admin", pg_database.admin_secret)
        cluster.start("beat")  # policy sync, due runs, and the recovery ticks
        timings: list[float] = []
        for phase in PHASES:
            for trial in range(TRIALS):
                n = f"{phase}{trial}"
                secret = f"db/app-{n}"
                password = uuid.uuid4().hex
                role = pg_database.alternating_pair(f"app{n}", password)
                initial = pg_database.credential(role, password)
                backend.write(secret, initial)
                started = time.monotonic()

                marker = tmp_path / f"paused-{n}"
                doomed = cluster.start(
                    "worker",
                    {
                        "KEYTURN_TEST_PAUSE": f"{step}:{phase}",
                        "KEYTURN_TEST_PAUSE_FILE": str(marker),
                    },
                )
                write_policy(cluster, f"crash-{n}", POLICY.format(n=n))  # due at once
                deadline_wait(
                    marker.exists, 45, f"the worker to pause at {step}:{phase}", cluster.logs
                )
                cluster.kill(doomed)  # SIGKILL the worker's process group at the boundary
                (run,) = runs_of(ledger, secret)
                assert run.state == FROM_STATE[step], (n, run.state)  # nothing committed

                fresh = cluster.start("worker")
                deadline_wait(
                    lambda s=secret: runs_of(ledger, s)[0].state in FINAL,
                    60,
                    f"{secret} to finish after the SIGKILL at {step}:{phase}",
                    cluster.logs,
                )
                cluster.kill(fresh)
                timings.append(time.monotonic() - started)

                (run,) = runs_of(ledger, secret)
                assert run.state == "succeeded", (n, run.last_error)
                versions = backend.versions(secret)
                assert len(versions) == 2, (n, versions)  # exactly one new version
                assert not [v for v in versions if Stage.PENDING in v.stages]
                current = backend.read(secret)
                assert current.token == run.token and current.version_id == run.to_version
                assert dict(backend.read(secret, stage=Stage.PREVIOUS).value) == initial
                new = dict(current.value)
                assert new["username"] != role  # alternated to the other role
                assert pg_database.accepts(new["username"], new["password"])
                assert not pg_database.accepts(role, password)  # the initial one is retired

        # one run per secret: the crash and the recovery never started a second one
        all_runs = runs_of(ledger)
        assert len(all_runs) == len(PHASES) * TRIALS
        assert {r.state for r in all_runs} == {"succeeded"}
        print(f"crash matrix {step}: trials {[round(t, 1) for t in timings]} s")
