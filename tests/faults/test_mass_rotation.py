"""The issue's proof at full size: 500 Vault secrets rotated by ``keyturn rotate-all --wait``
through real ``celery worker`` processes, OpenBao behind a proxy answering ``429 Too Many
Requests`` above a rate. Every run succeeds (none needs attention), each secret changes once,
a scheduled rotation runs beside it and a second ``rotate-all`` starts nothing twice
(tests/integration/test_mass_rotation.py holds the assertions and the 50-secret version). And
50 secrets whose 429s reach the engine (no client retries): waits, not attempts."""

from __future__ import annotations

import sys

import pytest

from rotation.ledger.db import Ledger
from tests.backends.cluster import Cluster
from tests.backends.vault import OpenBao
from tests.integration.test_mass_rotation import rotate_everything


@pytest.mark.timeout(1200)
def test_five_hundred_secrets_rotate_within_the_backend_rate_limit(
    openbao: OpenBao, cluster: Cluster, ledger: Ledger
) -> None:
    result = rotate_everything(
        openbao, cluster, ledger, 500, proxy_rate=50, write_quota=20, timeout=900
    )
    assert result.throttled_answers > 0
    print(
        f"500 secrets in {result.seconds:.0f}s: {result.throttled_answers} answers 429, "
        f"{result.throttled_waits} throttled waits in the engine",
        file=sys.stderr,
    )


@pytest.mark.timeout(900)
def test_throttling_that_reaches_the_engine_spends_no_attempts(
    openbao: OpenBao, cluster: Cluster, ledger: Ledger
) -> None:
    """No client retries and a short lease (the quota waits at most 0.8 s in a step): the 429s
    reach the engine, which waits them out; every run still succeeds (max_attempts 5)."""
    result = rotate_everything(
        openbao,
        cluster,
        ledger,
        50,
        proxy_rate=20,
        write_quota=8,
        timeout=600,
        extra_env={"VAULT_MAX_RETRIES": "0", "KEYTURN_LEASE_SECONDS": "10"},
    )
    assert result.throttled_answers > 0 and result.throttled_waits > 0
    assert result.most_waits_of_a_run > 5  # more throttled tries than max_attempts, yet succeeded
    print(
        f"50 secrets in {result.seconds:.0f}s: {result.throttled_answers} answers 429, "
        f"{result.throttled_waits} throttled waits in the engine",
        file=sys.stderr,
    )
