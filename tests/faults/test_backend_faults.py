"""Backend faults: a flaky Vault makes rotations retry and succeed; a dead one makes them stop
safely in ``needs_attention``, the current values untouched.

Common setup: real ``celery -A worker worker`` (-c 2) and ``beat`` processes with
``SECRETS_PROVIDER=vault`` and ``VAULT_ADDR`` pointing at a :class:`FaultProxy` in front of the
session's OpenBao dev server (root token, a fresh ``VAULT_PATH_PREFIX`` per test). Ten ``random``
secrets ``svc/key-00..09`` under one glob policy (30 days, ``max_attempts: 5``, no grace). The
policy is first synced paused through a clean proxy (a glob policy lists the backend, and a
failed listing is only retried at the 5-minute glob refresh), then the fault is switched on and
the policy unpaused: all ten runs start at once, under the fault. Every check of the outcome
reads Vault directly, WITHOUT the proxy.

Scenario — 30% of HTTP requests answer 503, Vault client retries as configured by default
(``VAULT_MAX_RETRIES`` unset = 4 retries with backoff in the client).
- Trials: 10 runs.
- Expected: all 10 ``succeeded``; each secret has exactly one new version (2 versions, current
  carries the run's token, nothing pending); the proxy injected errors. Most faults are absorbed
  by the client's retries; step retries in the ledger (``run_events.outcome = 'retry'``) are
  reported.

Scenario — 30% with ``VAULT_MAX_RETRIES=0``: every injected 503 reaches the engine, so its own
bounded attempts (5 per step, backoff 2 s * 2^(n-1)) are what is exercised.
- Trials: 10 runs.
- Expected: every run ends (none stuck, none ``failed``); each ``succeeded`` run has exactly one
  new version, each ``needs_attention`` run left its secret's current value unchanged; step
  retries recorded > 0. With one Vault request per ~4 a step makes, a step fails ~76% of tries
  at 30%, so some runs exhausting 5 attempts is the arithmetic, not a defect: the figures are
  reported.

Scenario — 100% of requests answer 503 (``VAULT_MAX_RETRIES=0``: client retries cannot help at
100% and would only stretch the test by ~3 s per try).
- Trials: 10 runs.
- Expected: all 10 end in ``needs_attention`` (attempts exhausted) within 90 s, each after
  exactly 4 recorded retries (bounded attempts, no loop); each secret's current value is the
  initial one and readable; no version was added; no pending value exists.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from rotation.errors import SecretNotFound
from rotation.ledger.db import Ledger
from rotation.ledger.models import Schedule
from rotation.providers.vault import VaultProvider
from rotation.providers.vault.auth import TokenAuth
from rotation.values import Stage
from tests.backends.cluster import Cluster
from tests.backends.faultproxy import FaultProxy
from tests.backends.vault import OpenBao, new_prefix
from tests.faults.helpers import (
    FINAL,
    cluster_env,
    deadline_wait,
    event_counts,
    new_cluster,
    running,
    runs_of,
    write_policy,
)

N = 10
SECRETS = [f"svc/key-{i:02d}" for i in range(N)]
POLICY = """
policies:
  - name: vault-keys
    secrets: ["svc/key-*"]
    kind: random
    schedule: {{every: 30d}}
    retire_after: 0s
    max_attempts: 5
    paused: {paused}
"""


@dataclass
class VaultRig:
    cluster: Cluster
    proxy: FaultProxy
    direct: VaultProvider
    ledger: Ledger

    def schedules(self) -> int:
        with self.ledger.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(Schedule)) or 0)

    def rotate_under(self, error_rate: float, timeout: float) -> dict[str, object]:
        """Sync the policy paused through a clean proxy, switch the fault on, unpause, and wait
        until every run ended (or ``timeout``)."""
        for name in SECRETS:
            self.direct.write(name, f"initial-{name}")
        write_policy(self.cluster, "vault-keys", POLICY.format(paused="true"))
        self.cluster.start("worker")
        self.cluster.start("beat")
        deadline_wait(lambda: self.schedules() == N, 60, "the policy sync", self.cluster.logs)
        before = dict(self.proxy.stats)
        self.proxy.configure(error_rate=error_rate)
        started = time.monotonic()
        write_policy(self.cluster, "vault-keys", POLICY.format(paused="false"))
        deadline_wait(
            lambda: len(rs := runs_of(self.ledger)) == N and all(r.state in FINAL for r in rs),
            timeout,
            f"all {N} runs to end at a {error_rate:.0%} error rate",
            self.cluster.logs,
            interval=0.5,
        )
        elapsed = time.monotonic() - started
        stats = dict(self.proxy.stats)
        self.proxy.configure()  # clean again, for the processes' sake; checks go direct anyway
        runs = runs_of(self.ledger)
        assert sorted(r.secret for r in runs) == SECRETS  # one run per secret
        figures = {
            "error_rate": error_rate,
            "states": {s: sum(r.state == s for r in runs) for s in {r.state for r in runs}},
            "step_retries": event_counts(self.ledger).get("retry", 0),
            "rolled_back": sum("rolled back" in (r.last_error or "") for r in runs),
            "rollback_incomplete": sum("rollback incomplete" in (r.last_error or "") for r in runs),
            "http_requests": stats.get("requests", 0) - before.get("requests", 0),
            "http_errors_injected": stats.get("errors", 0) - before.get("errors", 0),
            "wall_s": round(elapsed, 1),
        }
        print(f"figures: {figures}")
        return figures

    def assert_rotated_once(self, secret: str, token: str) -> None:
        versions = self.direct.versions(secret)
        assert len(versions) == 2, (secret, versions)  # exactly one new version
        current = self.direct.read(secret)
        assert current.token == token and current.value != f"initial-{secret}"
        assert self.direct.read(secret, stage=Stage.PREVIOUS).value == f"initial-{secret}"
        self.assert_no_pending(secret)

    def assert_untouched(self, secret: str) -> None:
        assert self.direct.read(secret).value == f"initial-{secret}"
        assert len(self.direct.versions(secret)) == 1
        self.assert_no_pending(secret)

    def assert_no_pending(self, secret: str) -> None:
        assert not [v for v in self.direct.versions(secret) if Stage.PENDING in v.stages]
        with pytest.raises(SecretNotFound):
            self.direct.read(secret, stage=Stage.PENDING)


@pytest.fixture
def rig_factory(tmp_path: Path, ledger_url: str, ledger: Ledger, openbao: OpenBao):
    made: list[tuple[FaultProxy, VaultProvider]] = []
    stack: list[object] = []

    def make(**env: str) -> VaultRig:
        prefix = new_prefix()
        proxy = FaultProxy(upstream=("127.0.0.1", openbao.server.port), seed=7)
        proxy.start()
        direct = VaultProvider(openbao.address, TokenAuth(openbao.root_token), path_prefix=prefix)
        made.append((proxy, direct))
        cluster_environ = cluster_env(
            tmp_path,
            ledger_url,
            SECRETS_PROVIDER="vault",
            VAULT_ADDR=proxy.address,
            VAULT_TOKEN=openbao.root_token,
            VAULT_PATH_PREFIX=prefix,
            VAULT_CLIENT_TIMEOUT="5",
            **env,
        )
        cm = running(new_cluster(cluster_environ, tmp_path))
        cluster = cm.__enter__()
        stack.append(cm)
        return VaultRig(cluster, proxy, direct, ledger)

    yield make
    for cm in stack:
        cm.__exit__(None, None, None)  # type: ignore[attr-defined]
    for proxy, direct in made:
        proxy.stop()
        direct.close()


@pytest.mark.parametrize(
    "client_retries", ["default", "0"], ids=["client-retries-default", "client-retries-0"]
)
def test_thirty_percent_errors(rig_factory, client_retries: str) -> None:
    env = {} if client_retries == "default" else {"VAULT_MAX_RETRIES": client_retries}
    rig = rig_factory(**env)
    figures = rig.rotate_under(0.3, timeout=150)
    assert figures["http_errors_injected"] > 0  # the fault was real
    runs = runs_of(rig.ledger)
    assert not [r for r in runs if r.state == "failed"], [(r.secret, r.last_error) for r in runs]
    for run in runs:
        if run.state == "succeeded":
            rig.assert_rotated_once(run.secret, run.token)
        else:
            assert run.state == "needs_attention"
            assert run.attempt == run.max_attempts, (run.secret, run.attempt)  # bounded
            assert "BackendUnavailable" in (run.last_error or ""), run.last_error
            current = rig.direct.read(run.secret)
            if "rolled back" in (run.last_error or ""):  # the rollback itself got through
                assert current.value == f"initial-{run.secret}"
                rig.assert_no_pending(run.secret)
            else:  # the rollback failed too: readers still get a valid value
                assert current.token in (None, run.token), run.last_error
    if client_retries == "default":
        # the client absorbs nearly all faults: every run succeeds within its attempts
        assert {r.state for r in runs} == {"succeeded"}, [(r.secret, r.last_error) for r in runs]
    else:
        assert figures["step_retries"] > 0  # the engine's own attempts did the work
        left = []
        for run in runs:
            try:
                rig.direct.read(run.secret, stage=Stage.PENDING)
            except SecretNotFound:
                continue
            left.append(run.secret)
        print(f"figures: pending values left behind by incomplete rollbacks: {len(left)}")


def test_hundred_percent_errors_end_in_needs_attention(rig_factory) -> None:
    rig = rig_factory(VAULT_MAX_RETRIES="0")
    figures = rig.rotate_under(1.0, timeout=90)
    runs = runs_of(rig.ledger)
    assert {r.state for r in runs} == {"needs_attention"}, [(r.secret, r.state) for r in runs]
    for run in runs:
        assert run.attempt == run.max_attempts, (run.secret, run.attempt)  # bounded
        assert "BackendUnavailable" in (run.last_error or ""), run.last_error
        rig.assert_untouched(run.secret)  # current still the initial value, nothing pending
    # bounded: attempts 1-4 each recorded a retry, the 5th gave up
    assert figures["step_retries"] == N * 4
    assert figures["http_requests"] == figures["http_errors_injected"]
