"""The ``external`` rotator's reference adapter (tests/adapters/reference_adapter.py) as a
fixture: ``external_adapter`` (function) serves a fresh key store over HTTPS on a free port of
127.0.0.1 with a certificate signed by its own CA (``ca_file``), stopped after the test. Its
``store`` has the HMAC key (``store.hmac_key``), the keys, and per-step call counts."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.adapters.reference_adapter import Adapter, KeyStore, serve

__all__ = ["external_adapter"]


@pytest.fixture
def external_adapter(tmp_path: Path) -> Iterator[Adapter]:
    directory = tmp_path / "adapter"
    directory.mkdir()
    adapter = serve(KeyStore(secrets.token_urlsafe(32)), directory)
    try:
        yield adapter
    finally:
        adapter.stop()
