"""SIGKILL a worker at every step boundary, for every kind beside ``postgres`` (which
test_crash_matrix.py covers): the run still completes with exactly one new version.

Scenario — the last clause of the rotator contract (docs/rotators.md): "a SIGKILL at every step
boundary resumes to exactly one new version".

- What: real ``celery -A worker worker`` and ``beat`` processes (Redis broker, Postgres ledger,
  local store) rotate a credential of each kind against its real server: ``random`` (the value
  only), ``external`` (the HTTPS reference adapter, a fresh one per trial), ``mysql``
  (alternating users on a throwaway MariaDB), ``redis`` (an ACL user on a throwaway
  redis-server), ``aws-iam`` (a user's access keys on the authenticating moto IAM server),
  ``ldap`` (a service account's password on a throwaway slapd, single mode) and ``certificate`` (a
  certificate from an internal CA kept in the store). A worker started with
  ``KEYTURN_TEST_PAUSE=<step>:<phase>`` parks at that boundary (``before``: lease taken, nothing
  done; ``after``: the step's effect done, its transition not committed); the test SIGKILLs its
  process group there and starts a fresh worker; beat's recovery tick re-enqueues the run once
  its lease (3 s) expired.
- Trials: 7 kinds x 7 steps x 2 phases = 98 runs, each on its own secret and credential.
- Expected, per trial: the kill left the run in the state the step leaves; after recovery the
  run ``succeeded``; the store holds exactly 2 versions (current carries the run's token,
  previous is the initial value, nothing pending); the target accepts the current credential
  and, for the kinds that revoke, refuses the initial one (an internal CA's certificate stays
  valid until it expires); one run per secret.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rotation.ledger.db import Ledger
from rotation.providers.local import LocalProvider
from rotation.values import SecretValue, Stage
from tests.adapters.reference_adapter import Adapter, KeyStore, serve
from tests.backends.certs import InternalCaCerts
from tests.backends.cluster import store
from tests.backends.mariadb import quote_identifier
from tests.faults.helpers import (
    FINAL,
    cluster_env,
    deadline_wait,
    new_cluster,
    running,
    runs_of,
    write_policy,
)

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
#: Kinds whose old credential is refused after the run (an internal CA's certificate expires).
REVOKES = {"external", "mysql", "redis", "aws-iam", "ldap"}

POLICY = """
policies:
  - name: crash-{n}
    secret: {secret}
    kind: {kind}
    schedule: {{every: 30d}}
    retire_after: 0s
    consumer_cache_ttl: 0s   # no consumer caches it here (the defaults rule)
    max_attempts: 5
    target: {target}
"""

#: (initial value, target block, works(value)) for trial ``n``.
Trial = tuple[SecretValue, str, Callable[[SecretValue], bool]]


class Kinds:
    """Per-kind setup of one trial, against the servers the test requested."""

    def __init__(self, request: pytest.FixtureRequest, backend: LocalProvider, tmp: Path):
        self.request, self.backend, self.tmp = request, backend, tmp
        self.adapters: list[Adapter] = []
        self.cleanups: list[Callable[[], None]] = []

    def random(self, n: str) -> Trial:
        return "initial-" + uuid.uuid4().hex, "{}", lambda value: True

    def external(self, n: str) -> Trial:
        directory = self.tmp / f"adapter-{n}"
        directory.mkdir()
        adapter = serve(KeyStore(secrets.token_urlsafe(32)), directory)
        self.adapters.append(adapter)
        self.backend.write(f"hmac/{n}", adapter.store.hmac_key)
        target = (
            f"{{url: '{adapter.url}', hmac_secret: hmac/{n}, ca_file: '{adapter.ca_file}', "
            "timeout: 5s}"
        )
        return adapter.store.issue_initial(), target, adapter.store.accepts

    def mysql(self, n: str) -> Trial:
        db = self.request.getfixturevalue("mariadb_database")
        self.backend.write("db/admin", db.admin_secret)
        user, password = db.user(f"app{n}"), uuid.uuid4().hex
        db.track_user(user + "_clone")
        with db.admin_connect() as conn, conn.cursor() as cur:
            cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
            cur.execute(f"GRANT SELECT ON {quote_identifier(db.name)}.* TO %s@'%%'", (user,))
        target = "{mode: alternating, admin_secret: db/admin, connect_timeout: 3}"
        return db.credential(user, password), target, _login(db.accepts)

    def redis(self, n: str) -> Trial:
        server = self.request.getfixturevalue("redis_acl_server")
        self.backend.write(
            "redis/admin", server.credential(server.admin_user, server.admin_password)
        )
        user, password = f"app{n}", uuid.uuid4().hex
        admin = server.admin_client()
        try:
            admin.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "+@all")
        finally:
            admin.close()
        target = "{admin_secret: redis/admin, connect_timeout: 3}"
        return server.credential(user, password), target, _login(server.accepts)

    def aws_iam(self, n: str) -> Trial:
        server = self.request.getfixturevalue("iam_server")
        user = server.create_user(f"kt-crash-{uuid.uuid4().hex[:8]}")
        self.cleanups.append(lambda: server.delete_user(user.user_name))
        admin = server.admin
        self.backend.write(
            "aws/admin",
            {"access_key_id": admin.access_key_id, "secret_access_key": admin.secret_access_key},
        )
        target = (
            f"{{admin_secret: aws/admin, endpoint_url: '{server.endpoint_url}', "
            f"region: {server.region}, ready_timeout: 5s, timeout: 5}}"
        )
        initial = {
            "access_key_id": user.access_key_id,
            "secret_access_key": user.secret_access_key,
            "user_name": user.user_name,
        }

        def works(value: SecretValue) -> bool:
            assert not isinstance(value, str)
            return bool(server.accepts(value["access_key_id"], value["secret_access_key"]))

        return initial, target, works

    def ldap(self, n: str) -> Trial:
        server = self.request.getfixturevalue("slapd_server")
        name, password = f"crash-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
        dn = server.add_service_account(name, password)
        self.cleanups.append(lambda: server.delete(dn))

        def works(value: SecretValue) -> bool:
            assert not isinstance(value, str)
            return bool(server.accepts(value["bind_dn"], value["password"]))

        initial = {"url": server.url, "bind_dn": dn, "password": password}
        return initial, "{mode: single, connect_timeout: 3}", works

    def certificate(self, n: str) -> Trial:
        ca = InternalCaCerts()
        self.backend.write(f"pki/ca-{n}", ca.ca)
        target = f"{{issuer: internal, ca_secret: pki/ca-{n}, ttl: 7d}}"
        return ca.issue(), target, ca.accepts

    def close(self) -> None:
        for adapter in self.adapters:
            adapter.stop()
        for cleanup in self.cleanups:
            cleanup()


def _login(accepts: Callable[[str, str], bool]) -> Callable[[SecretValue], bool]:
    def works(value: SecretValue) -> bool:
        assert not isinstance(value, str)
        return accepts(value["username"], value["password"])

    return works


@pytest.mark.parametrize("step", list(FROM_STATE))
@pytest.mark.parametrize(
    "kind", ["random", "external", "mysql", "redis", "aws-iam", "ldap", "certificate"]
)
def test_sigkill_at_step_boundary_resumes_to_one_new_version(
    kind: str,
    step: str,
    tmp_path: Path,
    ledger_url: str,
    ledger: Ledger,
    request: pytest.FixtureRequest,
) -> None:
    cluster = new_cluster(cluster_env(tmp_path, ledger_url), tmp_path)
    backend = store(cluster)
    kinds = Kinds(request, backend, tmp_path)
    with running(cluster):
        cluster.start("beat")
        timings: list[float] = []
        try:
            for phase in PHASES:
                n = f"{phase}0"
                secret = f"{kind}/cred-{n}"
                initial, target, works = getattr(kinds, kind.replace("-", "_"))(n)
                backend.write(secret, initial)
                assert works(initial)
                started = time.monotonic()
                marker = tmp_path / f"paused-{n}"
                doomed = cluster.start(
                    "worker",
                    {
                        "KEYTURN_TEST_PAUSE": f"{step}:{phase}",
                        "KEYTURN_TEST_PAUSE_FILE": str(marker),
                    },
                )
                body = POLICY.format(n=n, secret=secret, kind=kind, target=target)
                write_policy(cluster, f"crash-{n}", body)  # due at once
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
                previous: Any = backend.read(secret, stage=Stage.PREVIOUS).value
                assert previous == initial and current.value != initial
                assert works(current.value)
                if kind in REVOKES:
                    assert not works(initial)  # the initial credential is retired
        finally:
            kinds.close()
        assert len(runs_of(ledger)) == len(PHASES)  # one run per secret
        print(f"crash {kind} {step}: trials {[round(t, 1) for t in timings]} s")
