"""``keyturn doctor``'s check of manual requests' keys: the workers' keyring and this host's
operator key load, and the key's principal has its public key in the keyring."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rotation.access.requests import generate_key_pair
from rotation.config import RequestSettings
from rotation.ops.doctor import Status, check_requests

pytestmark = pytest.mark.unit


def _settings(keys: Path | None, key: Path | None) -> RequestSettings:
    return RequestSettings(
        operator_keys=str(keys) if keys else None, operator_key=str(key) if key else None
    )


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    """A keyring holding olivia's public key, and olivia's private key elsewhere."""
    own, ring = tmp_path / "own", tmp_path / "ring"
    own.mkdir(), ring.mkdir()
    private, public = generate_key_pair("olivia", own)
    shutil.copy(public, ring / public.name)
    return ring, private


def statuses(settings: RequestSettings) -> list[tuple[Status, str]]:
    return [(f.status, f.detail) for f in check_requests(settings)]


def test_nothing_set_here_is_skipped() -> None:
    found = statuses(_settings(None, None))
    assert [s for s, _ in found] == [Status.SKIP, Status.SKIP]
    assert "'api'" in found[0][1] and "cannot sign" in found[1][1]


def test_a_key_whose_public_key_is_in_the_keyring_passes(keys: tuple[Path, Path]) -> None:
    ring, private = keys
    found = statuses(_settings(ring, private))
    assert [s for s, _ in found] == [Status.OK, Status.OK]
    assert "olivia" in found[0][1] and "holds its key" in found[1][1]


def test_a_principal_missing_from_the_keyring_fails(keys: tuple[Path, Path]) -> None:
    ring, private = keys
    (ring / "olivia.pub").rename(ring / "mallory.pub")
    (key_line,) = statuses(_settings(ring, private))[1:]
    assert key_line[0] is Status.FAIL and "no olivia.pub" in key_line[1]


def test_another_key_under_the_principal_fails(keys: tuple[Path, Path], tmp_path: Path) -> None:
    ring, private = keys
    other = tmp_path / "other"
    other.mkdir()
    _, public = generate_key_pair("olivia", other)
    shutil.copy(public, ring / "olivia.pub")
    (key_line,) = statuses(_settings(ring, private))[1:]
    assert key_line[0] is Status.FAIL and "another key" in key_line[1]


def test_a_bad_keyring_or_key_names_the_problem(keys: tuple[Path, Path], tmp_path: Path) -> None:
    ring, private = keys
    missing = statuses(_settings(tmp_path / "nowhere", None))
    assert missing[0][0] is Status.FAIL and "KEYTURN_OPERATOR_KEYS" in missing[0][1]
    private.chmod(0o644)
    readable = statuses(_settings(ring, private))
    assert readable[1][0] is Status.FAIL and "chmod 600" in readable[1][1]
