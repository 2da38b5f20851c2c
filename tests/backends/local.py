"""The local encrypted store as a contract-suite fixture."""

from __future__ import annotations

import pytest

from rotation.providers.local import LocalProvider, generate_key


@pytest.fixture
def local_provider(tmp_path):
    provider = LocalProvider(tmp_path / "store", key=generate_key())
    yield provider
    provider.close()
