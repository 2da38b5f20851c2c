"""Zero downtime for the ``certificate`` kind: a TLS server (tests/apps/tls_app.py) reloads its
certificate on ``on_rotate`` while client threads connect continuously, verifying the chain
against the CA and the host name; real workers renew the certificate twice (``renew_before``,
then ``keyturn.rotate_now``; ``acknowledge`` restart). Not one handshake fails, the server ends
up serving each new certificate, and with OpenBao the retired certificates are on the CRL.
Against the internal CA (its key a secret in the store) and a real OpenBao PKI mount."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rotation.ledger.db import Ledger
from rotation.rotators.certificate.bundle import Bundle
from tests.backends.certs import InternalCaCerts, OpenBaoCerts
from tests.backends.cluster import BROKER, REPO, Cluster, runs, store, wait_for

POLICY = """
policies:
  - name: tls
    secret: tls/app
    kind: certificate
    schedule: {{renew_before: 30d}}
    retire_after: 1s
    restart: {{strategy: acknowledge, timeout: 2m}}
    target: {target}
"""
RENEWALS = 2


def _serial(value: Any) -> int:
    return int(Bundle.parse(value, "value").certificate.serial_number)


@pytest.mark.parametrize("issuer", ["internal", "openbao"])
def test_renewals_fail_no_handshake(
    issuer: str, cluster: Cluster, ledger: Ledger, request: pytest.FixtureRequest
) -> None:
    backend = store(cluster)
    worker_env: dict[str, str] = {}
    certs: InternalCaCerts | OpenBaoCerts
    if issuer == "internal":
        certs = InternalCaCerts()
        backend.write("tls/ca", certs.ca)
        initial = certs.issue(lifetime=timedelta(days=1))
        target = "{issuer: internal, ca_secret: tls/ca, ttl: 7d}"
        ca_pem = certs.ca["certificate"]
    else:
        pki = request.getfixturevalue("openbao_pki")
        certs = OpenBaoCerts(pki)
        worker_env = certs.env
        initial = certs.issue(ttl="24h")
        target = f"{{issuer: openbao, mount: {pki.mount}, role: {pki.role}, ttl: 2h}}"
        ca_pem = pki.ca_pem
    backend.write("tls/app", initial)
    ca_file = cluster.workdir / "ca.pem"
    ca_file.write_text(ca_pem)

    stats_path, stop_path = cluster.workdir / "app.json", cluster.workdir / "app.stop"
    log = open(cluster.workdir / "app.log", "wb")
    app = subprocess.Popen(
        [sys.executable, "-m", "tests.apps.tls_app"],
        env={**cluster.env, "KEYTURN_REDIS_URL": BROKER, "SECRETS_CACHE_TTL": "300",
             "APP_SECRET": "tls/app", "APP_CA": str(ca_file), "APP_STATS": str(stats_path),
             "APP_STOP": str(stop_path)},
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    log.close()

    def stats() -> dict[str, Any]:
        try:
            return dict(json.loads(stats_path.read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    served = [_serial(initial)]
    try:
        wait_for(
            lambda: stats().get("ok", 0) > 50 and stats().get("connected"),
            30,
            cluster,
            "the TLS application to serve",
        )
        (Path(cluster.env["KEYTURN_SCHEDULES"]) / "tls.yaml").write_text(
            POLICY.format(target=target)
        )
        cluster.start("worker", worker_env)
        cluster.start("beat")  # the initial certificate has 1 day left: due at once
        for n in range(RENEWALS):
            if n > 0:
                cluster.send("keyturn.rotate_now", "tls/app")
            wait_for(
                lambda n=n: (
                    len(runs(ledger)) == n + 1
                    and runs(ledger)[n].state in ("succeeded", "failed", "needs_attention")
                ),
                90,
                cluster,
                f"renewal {n + 1} to finish",
            )
            assert runs(ledger)[n].state == "succeeded", runs(ledger)[n].last_error
            served.append(_serial(backend.read("tls/app").value))
            wait_for(
                lambda: served[-1] in stats().get("served", []),
                30,
                cluster,
                f"the server to serve renewal {n + 1}",
            )
        stop_path.touch()
        app.wait(30)
    finally:
        if app.poll() is None:
            app.kill()
    final = stats()
    elapsed = final["stopped"] - final["started"]
    print(
        f"\nzero-downtime certificate ({issuer}): {final['ok']} handshakes in {elapsed:.1f}s "
        f"({final['ok'] / elapsed:.0f}/s) across {RENEWALS} renewals, {final['failed']} failed"
    )
    assert final["failed"] == 0, final["errors"]
    assert final["ok"] / elapsed >= 20, (final["ok"], elapsed)
    assert final["served"] == served  # each certificate in turn, none skipped, none back
    assert [r["serial"] for r in final["reloads"]] == served[1:]
    if isinstance(certs, OpenBaoCerts):  # retire revoked each replaced certificate
        crl = certs.crl()
        for serial in served[:-1]:
            assert crl.get_revoked_certificate_by_serial_number(serial) is not None
        assert crl.get_revoked_certificate_by_serial_number(served[-1]) is None
