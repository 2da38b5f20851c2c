"""The in-memory provider as a contract-suite fixture."""

from __future__ import annotations

import pytest

from rotation.providers.memory import MemoryProvider


@pytest.fixture
def memory_provider():
    provider = MemoryProvider()
    yield provider
    provider.close()
