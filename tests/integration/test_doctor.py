"""``keyturn doctor`` against real services: all green on a running deployment (Postgres
ledger at head, Redis, a real Celery worker, the local store, an authenticated Flower), and a
failing case for each check it makes: ledger unreachable, not migrated, behind; clock skewed;
broker unreachable; no worker, or none on our queue; a backend token without write grants
(OpenBao), a store whose key is wrong; AWS (moto) and Azure (emulator) without a write check;
Flower open to anyone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hvac
import pytest

from rotation.config import FlowerSettings
from rotation.ledger.db import Ledger
from rotation.ledger.migrate import upgrade
from rotation.ops.doctor import Status, check_clock, check_flower
from rotation.providers.base import LIST, READ, WRITE_PENDING
from rotation.providers.local import LocalProvider, generate_key
from rotation.providers.vault import VaultProvider
from rotation.providers.vault.auth import TokenAuth
from rotation.run.runtime import Runtime
from rotation.scheduler.dispatcher import Dispatcher
from tests.backends.cluster import REPO, Cluster
from tests.integration.dashboard_server import KEYTURN
from tests.integration.test_flower import PASSWORD, USER, start_flower

POLICY = """
policies:
  - name: api-keys
    secrets: ["svc/api_key", "svc/token_*"]
    kind: random
    schedule: {every: 30d}
"""


CELERY = [sys.executable, "-m", "celery", "-A", "worker", "worker"]


def _head() -> str:
    from alembic.script import ScriptDirectory

    from rotation.ledger.migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() or ""


#: The migration head this checkout ships (another migration may land after this was written).
HEAD = _head()


def doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KEYTURN, "doctor", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def lines(done: subprocess.CompletedProcess[str]) -> dict[str, tuple[str, str]]:
    """check -> (status, detail), from doctor's one line per check."""
    found = {}
    for line in done.stdout.splitlines():
        status, _, rest = line.partition("  ")
        if status.strip() in ("ok", "warn", "fail", "skip"):
            check, detail = rest.strip().split("  ", 1) if "  " in rest.strip() else (rest, "")
            found[check.strip()] = (status.strip(), detail.strip())
    return found


@pytest.fixture
def deployment(cluster: Cluster) -> Cluster:
    (Path(cluster.env["KEYTURN_SCHEDULES"]) / "api.yaml").write_text(POLICY)
    store = LocalProvider(cluster.env["KEYTURN_LOCAL_DIR"], key=cluster.env["KEYTURN_LOCAL_KEY"])
    store.write("svc/api_key", "doctor-initial-api-key-0001")
    store.write("svc/token_a", "doctor-initial-token-0002")
    store.close()
    runtime = Runtime(Ledger(cluster.env["KEYTURN_DATABASE_URL"]), environ=cluster.env)
    Dispatcher(runtime, Path(cluster.env["KEYTURN_SCHEDULES"])).sync_policies(runtime.clock())
    runtime.close()
    return cluster


def test_all_green_on_a_running_deployment(deployment: Cluster) -> None:
    deployment.start("worker")
    deployment.start("beat")
    flower = start_flower(deployment, [f"--basic-auth={USER}:{PASSWORD}"], {})
    # an operator's environment: its key, and the workers' keyring holding the public half
    operator = deployment.operator_env("ops")
    env = {k: v for k, v in operator.items() if not k.startswith("FLOWER_")}
    deadline = time.monotonic() + 60
    while True:  # until the worker is up and answers
        done = doctor(env, "--flower-url", flower.base, "--timeout", "3")
        found = lines(done)
        up = found["worker"][0] == "ok" and found["dispatcher"][0] == "ok"
        if up or time.monotonic() > deadline:
            break
    assert done.returncode == 0, done.stdout + done.stderr + deployment.logs()
    assert found["ledger"][0] == "ok" and "answers" in found["ledger"][1]
    assert found["migrations"] == ("ok", f"at head {HEAD}")
    assert found["clock"][0] == "ok"
    assert found["dispatcher"][0] == "ok" and "s ago, by " in found["dispatcher"][1]
    assert found["broker"][0] == "ok"
    assert found["worker"][0] == "ok" and deployment.env["KEYTURN_QUEUE"] in found["worker"][1]
    for permission in (READ, WRITE_PENDING, LIST):
        assert found[f"backend local: {permission}"][0] == "ok", found
    assert "2 secret(s) decrypt" in found[f"backend local: {READ}"][1]
    assert found["flower"] == (
        "ok",
        f"Flower at {flower.base} refuses requests without credentials",
    )
    assert found["keyring (KEYTURN_OPERATOR_KEYS)"][0] == "ok"
    assert found["operator key (KEYTURN_OPERATOR_KEY)"] == (
        "ok",
        "signs as 'ops'; the keyring holds its key",
    )
    assert "all checks passed" in done.stdout
    assert "doctor-initial" not in done.stdout + done.stderr

    wrong_key = {**env, "KEYTURN_LOCAL_KEY": generate_key()}
    done = doctor(wrong_key, "--timeout", "10")
    assert done.returncode == 1
    # the local store checks its key when it opens: the backend fails as a whole
    status, detail = lines(done)["backend local"]
    assert status == "fail" and "not the one it was written with" in detail


def test_no_worker_and_a_worker_on_another_queue(deployment: Cluster) -> None:
    done = doctor(deployment.env, "--timeout", "1")
    assert done.returncode == 1
    # no beat and no worker: no dispatcher tick was ever recorded
    assert lines(done)["dispatcher"][0] == "fail"
    worker = lines(done)["worker"]
    # other tests' workers may share this Redis: they answer, but not on our queue
    assert worker[0] == "fail", done.stdout
    assert "no worker answered" in worker[1] or "none consumes queue" in worker[1]
    other = f"other-{uuid.uuid4().hex[:6]}"
    log = open(deployment.workdir / "other-worker.log", "wb")
    deployment.procs.append(
        subprocess.Popen(
            [*CELERY, "-Q", other, "-c", "1", "-n", f"{other}@%h", "--loglevel=INFO"],
            env={**deployment.env, "KEYTURN_QUEUE": other},
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    )
    log.close()
    deadline = time.monotonic() + 60
    while True:
        done = doctor(deployment.env, "--timeout", "2")
        worker = lines(done)["worker"]
        if "none consumes queue" in worker[1] or time.monotonic() > deadline:
            break
    assert worker[0] == "fail" and "none consumes queue" in worker[1], done.stdout


def test_unreachable_ledger_and_broker_are_one_line_without_passwords(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "KEYTURN_DATABASE_URL": "postgresql://keyturn:ledger-pw-1234@127.0.0.1:9/keyturn",
        "KEYTURN_BROKER_URL": "redis://:broker-pw-5678@127.0.0.1:9/0",
        "KEYTURN_SCHEDULES": str(tmp_path),
    }
    done = doctor(env, "--timeout", "1")
    found = lines(done)
    assert done.returncode == 1
    assert found["ledger"][0] == "fail" and "cannot reach" in found["ledger"][1]
    assert found["migrations"][0] == "skip" and found["clock"][0] == "skip"
    assert (
        found["broker"][0] == "fail" and "cannot reach redis://127.0.0.1:9/0" in found["broker"][1]
    )
    assert found["worker"][0] == "skip"
    assert "ledger-pw" not in done.stdout + done.stderr
    assert "broker-pw" not in done.stdout + done.stderr


def test_a_ledger_not_migrated_or_behind(empty_database: str, tmp_path: Path) -> None:
    env = {**os.environ, "KEYTURN_DATABASE_URL": empty_database, "KEYTURN_SCHEDULES": str(tmp_path)}
    found = lines(doctor(env, "--timeout", "1"))
    assert found["migrations"] == ("fail", "no Keyturn tables: run `keyturn db upgrade`")
    upgrade(empty_database, "0002")
    found = lines(doctor(env, "--timeout", "1"))
    assert found["migrations"] == ("fail", f"at 0002, head is {HEAD}: run `keyturn db upgrade`")


def test_clock_skew_against_the_database(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    try:
        (fine,) = check_clock(ledger, lambda: datetime.now(UTC))
        assert fine.status is Status.OK and "the database" in fine.detail
        ahead = lambda: datetime.now(UTC) + timedelta(seconds=90)  # noqa: E731
        (skewed,) = check_clock(ledger, ahead)
        assert skewed.status is Status.FAIL
        assert "ahead of the database" in skewed.detail and "NTP" in skewed.detail
        (behind,) = check_clock(ledger, lambda: datetime.now(UTC) - timedelta(seconds=30))
        assert behind.status is Status.FAIL and "behind" in behind.detail
    finally:
        ledger.dispose()


def test_vault_permissions_are_asked_without_writing(openbao, vault_root: hvac.Client) -> None:
    prefix = f"doc-{uuid.uuid4().hex[:8]}/"
    vault_root.secrets.kv.v2.create_or_update_secret(
        f"{prefix}svc/api_key", secret={"value": "vault-doctor-value-0001"}, mount_point="secret"
    )
    names = ["svc/api_key"]
    root = VaultProvider(openbao.address, TokenAuth(openbao.root_token), path_prefix=prefix)
    checks = {c.permission: c for c in root.check_access(names)}
    assert all(c.allowed for c in checks.values()), checks
    before = vault_root.secrets.kv.v2.read_secret_metadata(f"{prefix}svc/api_key")["data"]

    policy = f"read-only-{uuid.uuid4().hex[:6]}"
    vault_root.sys.create_or_update_policy(
        policy,
        f'path "secret/data/{prefix}*" {{ capabilities = ["read"] }}\n'
        f'path "secret/metadata/{prefix}*" {{ capabilities = ["read"] }}\n',
    )
    token = vault_root.auth.token.create(policies=[policy], ttl="10m")["auth"]["client_token"]
    narrow = VaultProvider(openbao.address, TokenAuth(token), path_prefix=prefix)
    checks = {c.permission: c for c in narrow.check_access(names)}
    assert checks[READ].allowed is True
    assert checks[WRITE_PENDING].allowed is False
    assert f"secret/data/{prefix}.keyturn/pending/svc/api_key" in checks[WRITE_PENDING].detail
    assert checks[LIST].allowed is False and "list" in checks[LIST].detail
    after = vault_root.secrets.kv.v2.read_secret_metadata(f"{prefix}svc/api_key")["data"]
    assert after["current_version"] == before["current_version"] == 1  # nothing was written
    root.close()
    narrow.close()


def test_aws_reads_and_lists_but_cannot_prove_a_write(aws_provider) -> None:
    aws_provider.write("svc/api_key", "aws-doctor-value-0001")
    checks = {c.permission: c for c in aws_provider.check_access(["svc/api_key"])}
    assert checks[READ].allowed is True and checks[LIST].allowed is True
    assert checks[WRITE_PENDING].allowed is None  # moto has no iam:SimulatePrincipalPolicy
    assert "SimulatePrincipalPolicy" in checks[WRITE_PENDING].detail
    assert len(aws_provider.versions("svc/api_key")) == 1
    missing = {c.permission: c for c in aws_provider.check_access(["svc/missing"])}
    assert missing[READ].allowed is False and "svc/missing" in missing[READ].detail


def test_azure_reads_and_lists_and_says_a_write_is_not_verifiable(azure_provider) -> None:
    azure_provider.write("svc/api_key", "azure-doctor-value-0001")
    checks = {c.permission: c for c in azure_provider.check_access(["svc/api_key"])}
    assert checks[READ].allowed is True and checks[LIST].allowed is True
    assert checks[WRITE_PENDING].allowed is None and "Key Vault" in checks[WRITE_PENDING].detail
    assert len(azure_provider.versions("svc/api_key")) == 1


def test_flower_open_to_anyone_fails(cluster: Cluster) -> None:
    open_flower = start_flower(cluster, [], {})
    (finding,) = check_flower(open_flower.base, FlowerSettings())
    assert finding.status is Status.FAIL and "answers / without credentials" in finding.detail
    (gone,) = check_flower("http://127.0.0.1:9", FlowerSettings(), timeout=1)
    assert gone.status is Status.FAIL and "cannot reach Flower" in gone.detail
    (env_open,) = check_flower(None, FlowerSettings(basic_auth=True, unauthenticated_api=True))
    assert env_open.status is Status.FAIL and "FLOWER_UNAUTHENTICATED_API" in env_open.detail
    (env_set,) = check_flower(None, FlowerSettings(basic_auth=True))
    assert env_set.status is Status.OK
    (unknown,) = check_flower(None, FlowerSettings())
    assert unknown.status is Status.SKIP


def test_a_host_clock_ahead_of_the_database_fails_the_clock_check(deployment: Cluster) -> None:
    """The CLI compares this host's clock, not the runtime's (which is the database's)."""
    faketime = shutil.which("faketime")
    if faketime is None:
        pytest.skip("faketime not installed (scripts/install-test-deps.sh installs it)")
    done = subprocess.run(
        [faketime, "-f", "+30s", *KEYTURN, "doctor", "--timeout", "1"],
        env={**deployment.env, "FAKETIME_DONT_FAKE_MONOTONIC": "1"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    status, detail = lines(done)["clock"]
    assert status == "fail" and "ahead of the database" in detail, done.stdout
