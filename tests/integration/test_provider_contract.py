"""The provider contract: every backend behaves the same through the Protocol.

Runs against each fixture in ``tests.conftest.CONTRACT_PROVIDERS``. A fixture hands out a
provider scoped to a fresh, empty namespace (a unique prefix on shared servers).
"""

from __future__ import annotations

import threading
import uuid

import pytest

from rotation.errors import InvalidSecretName, SecretNotFound, VersionConflict
from rotation.providers.base import Provider
from rotation.values import Stage


def _name(stem: str = "s") -> str:
    return f"{stem}_{uuid.uuid4().hex[:8]}"


def test_is_a_provider(provider: Provider) -> None:
    assert isinstance(provider, Provider)
    assert provider.name


def test_round_trip_string(provider: Provider) -> None:
    name = _name("db_password")
    version = provider.write(name, "secure_password_123")
    got = provider.read(name)
    assert got.value == "secure_password_123"
    assert got.version_id == version


def test_round_trip_json_object(provider: Provider) -> None:
    name = _name("db")
    creds = {"username": "app", "password": "pw", "host": "db.internal", "port": 5432}
    provider.write(name, creds)
    value = provider.read(name).value
    assert isinstance(value, dict)
    assert dict(value) == creds


def test_string_that_looks_like_json_stays_a_string(provider: Provider) -> None:
    name = _name("raw")
    provider.write(name, '{"a": 1}')
    assert provider.read(name).value == '{"a": 1}'


def test_overwrite_moves_current_to_previous(provider: Provider) -> None:
    name = _name()
    v1 = provider.write(name, "one")
    v2 = provider.write(name, "two")
    assert v1 != v2
    assert provider.read(name).value == "two"
    assert provider.read(name, stage=Stage.PREVIOUS).value == "one"
    stages = {v.version_id: v.stages for v in provider.versions(name)}
    assert stages[v2] == {Stage.CURRENT}
    assert stages[v1] == {Stage.PREVIOUS}


def test_versions_never_carry_values(provider: Provider) -> None:
    name = _name()
    provider.write(name, "value-that-must-not-show")
    for info in provider.versions(name):
        assert "value-that-must-not-show" not in repr(info)
        assert "value-that-must-not-show" not in str(info.to_dict())


def test_pending_is_invisible_until_promoted(provider: Provider) -> None:
    name = _name()
    provider.write(name, "old")
    token = uuid.uuid4().hex
    pending_id = provider.stage_pending(name, "new", token=token)
    assert provider.read(name).value == "old"
    assert provider.read(name, stage=Stage.PENDING).value == "new"
    # the engine recognises its own pending and promoted versions by token
    assert provider.read(name, stage=Stage.PENDING).token == token
    assert provider.stage_pending(name, "new", token=token) == pending_id  # idempotent
    current_id = provider.promote(name, token=token)
    assert provider.read(name).value == "new"
    assert provider.read(name).token == token
    assert provider.read(name, stage=Stage.PREVIOUS).value == "old"
    assert provider.promote(name, token=token) == current_id  # idempotent
    with pytest.raises(SecretNotFound):
        provider.read(name, stage=Stage.PENDING)
    current = [v for v in provider.versions(name) if Stage.CURRENT in v.stages]
    assert len(current) == 1 and current[0].version_id == current_id


def test_same_token_other_value_conflicts(provider: Provider) -> None:
    name = _name()
    provider.write(name, "old")
    token = uuid.uuid4().hex
    provider.stage_pending(name, "new", token=token)
    with pytest.raises(VersionConflict):
        provider.stage_pending(name, "different", token=token)


def test_discard_pending_leaves_current(provider: Provider) -> None:
    name = _name()
    provider.write(name, "old")
    token = uuid.uuid4().hex
    provider.stage_pending(name, "new", token=token)
    provider.discard_pending(name, token=token)
    provider.discard_pending(name, token=token)  # idempotent
    assert provider.read(name).value == "old"
    with pytest.raises(SecretNotFound):
        provider.read(name, stage=Stage.PENDING)


def test_rollback_restores_previous_once(provider: Provider) -> None:
    name = _name()
    provider.write(name, "old")
    token = uuid.uuid4().hex
    provider.stage_pending(name, "new", token=token)
    provider.promote(name, token=token)
    provider.rollback(name, token=token)
    assert provider.read(name).value == "old"
    provider.rollback(name, token=token)  # idempotent: the token is no longer current
    assert provider.read(name).value == "old"


def test_list_with_prefix(provider: Provider) -> None:
    stem = f"api_key_{uuid.uuid4().hex[:6]}"
    names = [f"{stem}_ncbi", f"{stem}_openfda"]
    other = _name("db_password")
    for n in [*names, other]:
        provider.write(n, "v")
    assert provider.list(prefix=stem) == sorted(names)
    assert {*names, other} <= set(provider.list())


def test_delete(provider: Provider) -> None:
    name = _name("old_api_key")
    provider.write(name, "v")
    provider.delete(name, force=True)
    assert name not in provider.list()
    with pytest.raises(SecretNotFound):
        provider.read(name)


def test_not_found(provider: Provider) -> None:
    name = _name("missing")
    with pytest.raises(SecretNotFound) as info:
        provider.read(name)
    assert name in str(info.value)
    assert "list" in str(info.value)
    with pytest.raises(SecretNotFound):
        provider.versions(name)
    with pytest.raises(SecretNotFound):
        provider.stage_pending(name, "v", token=uuid.uuid4().hex)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "../etc/passwd",
        "a/../../b",
        "/abs",
        "new\nline",
        "nul\x00",
        "tab\t",
        "sp ace",
        "a//b",
        "trail/",
        ".hidden",
        "semi;colon",
        "quote'--",
        "pct%2e%2e",
        "q?version=1",
        "x" * 300,
    ],
)
def test_bad_names_are_refused(provider: Provider, bad: str) -> None:
    with pytest.raises(InvalidSecretName):
        provider.write(bad, "v")
    with pytest.raises(InvalidSecretName):
        provider.read(bad)


def test_expected_version_check_and_set(provider: Provider) -> None:
    name = _name()
    v1 = provider.write(name, "one")
    provider.write(name, "two", expected_version=v1)
    with pytest.raises(VersionConflict):
        provider.write(name, "three", expected_version=v1)
    assert provider.read(name).value == "two"


def test_concurrent_writers_lose_nothing(provider: Provider) -> None:
    stem = _name("conc")
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            for j in range(5):
                provider.write(f"{stem}_{i}_{j}", f"value-{i}-{j}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(provider.list(prefix=stem)) == 20
    assert provider.read(f"{stem}_3_4").value == "value-3-4"
