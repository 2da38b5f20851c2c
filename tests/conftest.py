"""Shared test wiring: markers by folder, and the provider fixtures every backend joins."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

pytest_plugins = [
    "tests.backends.memory",
    "tests.backends.local",
    "tests.backends.vault",
    "tests.backends.aws",
    "tests.backends.azure",
    "tests.backends.ledger",
    "tests.backends.pgserver",
    "tests.backends.cluster",
    "tests.backends.mariadb",
    "tests.backends.redis_acl",
    "tests.backends.slapd",
    "tests.backends.iam",
    "tests.backends.openbao_pki",
    "tests.backends.external_adapter",
    "tests.backends.every_state",
]

# Generated inputs are judged on their outcome, not their speed: on a shared 2-core machine (and
# with the suite split across processes) one example can take seconds.
settings.register_profile("keyturn", deadline=None)
settings.load_profile("keyturn")

#: Every provider the contract suite runs against: (id, fixture name).
CONTRACT_PROVIDERS = ["memory", "local", "vault", "aws", "azure"]

_FOLDER_MARKERS = {
    "unit": "unit",
    "integration": "integration",
    "contract": "integration",
    "faults": "faults",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        marker = _FOLDER_MARKERS.get(folder)
        if marker:
            item.add_marker(getattr(pytest.mark, marker))


@pytest.fixture(params=CONTRACT_PROVIDERS)
def provider(request: pytest.FixtureRequest):
    """A fresh, empty provider of each kind (function-scoped: each test gets its own namespace)."""
    return request.getfixturevalue(f"{request.param}_provider")
