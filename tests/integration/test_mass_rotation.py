"""A mass rotation (``keyturn rotate-all --wait``) through real ``celery worker`` processes, with
OpenBao behind a proxy that answers ``429 Too Many Requests`` above a rate: every run succeeds
(throttling waits, it spends no attempt), each secret changes exactly once, a scheduled rotation
of another policy completes meanwhile, and a second ``rotate-all`` starts nothing twice.

The 50-secret version runs in the default suite; tests/faults/test_mass_rotation.py runs 500.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, update

from rotation.ledger.db import Ledger
from rotation.ledger.models import RunEvent, Schedule
from rotation.providers.local import LocalProvider
from rotation.providers.vault import VaultProvider
from rotation.providers.vault.auth import TokenAuth
from rotation.run.runtime import Runtime
from rotation.scheduler.dispatcher import Dispatcher
from rotation.values import Stage
from tests.backends.cluster import Cluster, runs, store, wait_for
from tests.backends.faultproxy import FaultProxy
from tests.backends.vault import OpenBao, new_prefix

KEYTURN = [sys.executable, "-c", "from rotation.cli import main; main()"]
STEADY = "steady/api_key"


@dataclass
class MassResult:
    """What a mass rotation left, for the assertions of both sizes."""

    throttled_answers: int
    throttled_waits: int
    #: The most ``throttled`` events of one run (more than max_attempts: no attempt spent).
    most_waits_of_a_run: int
    seconds: float
    output: str


def _policies(names: list[str]) -> str:
    listed = "\n".join(f"      - {name}" for name in names)
    return f"""
policies:
  - name: mass
    provider: vault
    secrets:
{listed}
    kind: random
    schedule: {{every: 30d}}
    retire_after: 0s
  - name: steady
    provider: local
    secret: {STEADY}
    kind: random
    schedule: {{every: 30d}}
    retire_after: 0s
"""


def rotate_everything(
    openbao: OpenBao,
    cluster: Cluster,
    ledger: Ledger,
    count: int,
    *,
    proxy_rate: float,
    write_quota: float,
    timeout: float,
    extra_env: dict[str, str] | None = None,
) -> MassResult:
    """Rotate ``count`` Vault secrets with ``rotate-all --wait`` behind a 429 proxy; assert the
    outcome the issue asks for and return the figures."""
    prefix = new_prefix()
    names = [f"mass/s{i:04d}" for i in range(count)]
    direct = VaultProvider(openbao.address, TokenAuth(openbao.root_token), path_prefix=prefix)
    for name in names:
        direct.write(name, f"initial-{name}")
    store(cluster).write(STEADY, "steady-initial")
    schedules = Path(cluster.env["KEYTURN_SCHEDULES"])
    (schedules / "policies.yaml").write_text(_policies(names))

    with FaultProxy(upstream=("127.0.0.1", openbao.server.port), seed=7) as proxy:
        cluster.env.update(
            {
                "VAULT_ADDR": proxy.address,
                "VAULT_TOKEN": openbao.root_token,
                "VAULT_PATH_PREFIX": prefix,
                # room for a few backed-off requests in a step under a loaded machine
                "KEYTURN_LEASE_SECONDS": "60",
                "KEYTURN_REDELIVER_SECONDS": "10",
                "KEYTURN_NAMESPACE": f"mass-{uuid.uuid4().hex[:8]}",
                "KEYTURN_RATE_VAULT_WRITE": str(write_quota),
                **(extra_env or {}),
            }
        )
        # the policies are in the ledger, nothing due: the mass rotation is the operator's
        setup = Runtime(ledger, environ={**cluster.env, "VAULT_ADDR": openbao.address})
        Dispatcher(setup, schedules).sync_policies(setup.clock())
        with ledger.transaction() as session:
            session.execute(update(Schedule).values(next_due_at=setup.clock() + timedelta(days=30)))
        proxy.configure(rate_limit=proxy_rate)
        for _ in range(2):
            cluster.start("worker")
        cluster.start("beat")

        began = setup.clock()
        first = subprocess.Popen(
            [*KEYTURN, "rotate-all", "mass/", "--yes", "--wait", "--timeout", str(timeout)],
            env=cluster.operator_env("ops"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: runs(ledger), 120, cluster, "the first run to start")
            # a scheduled rotation of another policy falls due as the mass rotation begins
            with ledger.transaction() as session:
                session.execute(
                    update(Schedule)
                    .where(Schedule.secret == STEADY)
                    .values(next_due_at=setup.clock())
                )
            wait_for(lambda: len(runs(ledger)) >= count + 1, 300, cluster, "the runs to start")
            # a second rotate-all during the first starts nothing twice: the active runs are
            # kept, and those that succeeded already (since it began) are skipped
            since = f"{began:%Y-%m-%dT%H:%M:%SZ}"
            second = subprocess.run(
                [*KEYTURN, "rotate-all", "mass/", "--yes", "--since", since],
                env=cluster.operator_env("ops"),
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert second.returncode == 0, second.stdout + second.stderr
            kept = second.stdout.count("is already being rotated")
            skipped = second.stdout.count("was rotated since then")
            assert kept + skipped == count and "started run" not in second.stdout
            output, _ = first.communicate(timeout=timeout + 60)
        finally:
            if first.poll() is None:
                first.kill()
                first.communicate()  # reaped and its pipe closed: no warning in a later test
        text = output.decode(errors="replace")
        throttled_answers = proxy.stats["throttled"]
    direct_text = f"\n{text[-3000:]}\n{cluster.logs()}"
    assert first.returncode == 0, direct_text
    assert f"all {count} runs succeeded" in text, direct_text

    done = runs(ledger)
    mass = [run for run in done if run.policy_name == "mass"]
    assert sorted(run.secret for run in mass) == names  # one run per secret
    assert {run.state for run in mass} == {"succeeded"}
    assert {run.trigger for run in mass} == {"manual"}
    assert throttled_answers > 0  # the proxy did throttle: the test can fail

    for run in mass:  # changed exactly once: the one new value is current, the initial previous
        current = direct.read(run.secret)
        assert current.token == run.token and current.value != f"initial-{run.secret}"
        assert direct.read(run.secret, stage=Stage.PREVIOUS).value == f"initial-{run.secret}"
    direct.close()

    with ledger.sessions() as session:
        per_run = session.execute(
            select(RunEvent.run_id, func.count())
            .where(RunEvent.outcome == "throttled")
            .group_by(RunEvent.run_id)
        ).all()
    waits = sum(n for _, n in per_run)
    first_start = min(run.created_at for run in mass)
    last_end = max(run.finished_at for run in mass if run.finished_at)
    (steady,) = [run for run in done if run.secret == STEADY]

    def since_start(at: datetime | None) -> str:
        return f"{((at or last_end) - first_start).total_seconds():.1f}s"

    print(
        f"{count} secrets: {since_start(last_end)} from the first start to the last end; "
        f"the scheduled run from {since_start(steady.created_at)} to "
        f"{since_start(steady.finished_at)}; "
        f"{throttled_answers} answers 429 of {proxy.stats['requests']} requests; "
        f"{waits} throttled waits in the engine",
        file=sys.stderr,
    )
    assert steady.trigger == "schedule" and steady.state == "succeeded", steady.last_error
    assert steady.finished_at is not None
    # it ran beside the mass rotation (its steps go first), not behind it: done in less than
    # half the time the mass rotation took
    assert steady.finished_at - steady.created_at < (last_end - first_start) / 2
    assert steady.finished_at < last_end
    assert LocalProvider(
        cluster.env["KEYTURN_LOCAL_DIR"], key=cluster.env["KEYTURN_LOCAL_KEY"]
    ).read(STEADY, stage=Stage.PREVIOUS).value == ("steady-initial")

    return MassResult(
        throttled_answers,
        waits,
        max((n for _, n in per_run), default=0),
        (last_end - first_start).total_seconds(),
        text,
    )


def test_fifty_secrets_rotate_within_the_backend_rate_limit(
    openbao: OpenBao, cluster: Cluster, ledger: Ledger
) -> None:
    """The client's own retries and the quota absorb the 429s (about 140 of 1,200 requests)."""
    result = rotate_everything(
        openbao, cluster, ledger, 50, proxy_rate=20, write_quota=8, timeout=240
    )
    assert result.throttled_answers > 0
