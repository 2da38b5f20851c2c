"""SecretsManager over the in-memory provider: cache, invalidation, batch, rotation reports."""

from __future__ import annotations

import threading

import pytest

from rotation import SecretNotFound, SecretsManager
from rotation.errors import InvalidSecretName, InvalidSecretValue, UnsupportedOperation
from rotation.providers.memory import MemoryProvider
from rotation.values import Stage


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingProvider(MemoryProvider):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def read(self, name, *, stage=Stage.CURRENT):  # type: ignore[override]
        self.reads += 1
        return super().read(name, stage=stage)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def provider() -> CountingProvider:
    return CountingProvider()


@pytest.fixture
def manager(provider: CountingProvider, clock: FakeClock) -> SecretsManager:
    return SecretsManager(provider, cache_ttl=300, clock=clock)


def test_get_is_cached_until_ttl(manager, provider, clock) -> None:
    provider.write("db_password", "one")
    assert manager.get("db_password") == "one"
    provider.write("db_password", "two")  # another writer: seen only after the TTL
    clock.now += 299
    assert manager.get("db_password") == "one"
    assert provider.reads == 1
    clock.now += 1  # exactly at expiry: never serve an expired entry
    assert manager.get("db_password") == "two"
    assert provider.reads == 2


def test_use_cache_false_bypasses_and_refreshes(manager, provider) -> None:
    provider.write("api_key", "one")
    manager.get("api_key")
    provider.write("api_key", "two")
    assert manager.get("api_key", use_cache=False) == "two"
    assert manager.get("api_key") == "two"
    assert provider.reads == 2


def test_own_writes_rotations_and_deletes_invalidate(manager, provider) -> None:
    manager.set("k", "one")
    assert manager.get("k") == "one"
    manager.set("k", "two")
    assert manager.get("k") == "two"
    new = manager.rotate("k")
    assert manager.get("k") == new != "two"
    manager.delete("k")
    with pytest.raises(SecretNotFound):
        manager.get("k")


def test_not_found_is_not_remembered(manager, provider) -> None:
    with pytest.raises(SecretNotFound) as info:
        manager.get("missing_secret")
    assert "keyturn secrets list" in str(info.value)
    provider.write("missing_secret", "now here")
    assert manager.get("missing_secret") == "now here"


def test_ttl_zero_disables_cache(provider, clock) -> None:
    manager = SecretsManager(provider, cache_ttl=0, clock=clock)
    provider.write("k", "v")
    manager.get("k")
    manager.get("k")
    assert provider.reads == 2


def test_seed_guide_cache_ttl_knob(manager, provider, clock) -> None:
    provider.write("k", "one")
    manager.get("k")
    manager._cache_ttl = 60
    assert manager.cache_ttl == 60
    provider.write("k", "two")
    assert manager.get("k") == "two"  # changing the TTL dropped the old entries
    provider.write("k", "three")
    clock.now += 60
    assert manager.get("k") == "three"


def test_json_values_are_read_only_and_shared_safely(manager) -> None:
    manager.set("db", {"username": "app", "password": "pw", "port": 5432})
    value = manager.get("db")
    assert value == {"username": "app", "password": "pw", "port": 5432}
    with pytest.raises(TypeError):
        value["password"] = "hacked"  # type: ignore[index]
    assert manager.get("db")["password"] == "pw"


def test_bad_values_and_names(manager) -> None:
    with pytest.raises(InvalidSecretValue):
        manager.set("k", 42)  # type: ignore[arg-type]
    with pytest.raises(InvalidSecretValue):
        manager.set("k", {"x": object()})
    with pytest.raises(InvalidSecretName):
        manager.set("../escape", "v")
    assert manager.list() == []


def test_list_with_prefix(manager) -> None:
    manager.set_many({"api_key_ncbi": "a", "api_key_openfda": "b", "db_password": "c"})
    assert manager.list() == ["api_key_ncbi", "api_key_openfda", "db_password"]
    assert manager.list(prefix="api_key") == ["api_key_ncbi", "api_key_openfda"]


def test_get_many_and_set_many(manager, provider) -> None:
    versions = manager.set_many({f"k{i}": f"v{i}" for i in range(20)})
    assert len(versions) == 20
    manager.get("k0")
    reads_before = provider.reads
    values = manager.get_many([f"k{i}" for i in range(20)])
    assert values == {f"k{i}": f"v{i}" for i in range(20)}
    assert provider.reads - reads_before == 19  # k0 came from the cache


def test_get_many_names_every_missing(manager) -> None:
    manager.set("here", "v")
    with pytest.raises(SecretNotFound) as info:
        manager.get_many(["here", "gone_a", "gone_b"])
    assert "gone_a" in str(info.value) and "gone_b" in str(info.value)


def test_set_many_checks_everything_before_writing(manager) -> None:
    with pytest.raises(InvalidSecretName):
        manager.set_many({"good": "v", "bad name": "v"})
    assert manager.list() == []


def test_rotate_string_and_json(manager) -> None:
    manager.set("api_key", "old")
    new = manager.rotate("api_key")
    assert isinstance(new, str) and new != "old" and len(new) == 32
    assert manager.get("api_key", use_cache=False) == new
    stages = [v.stages for v in manager.versions("api_key")]
    assert stages == [{Stage.PREVIOUS}, {Stage.CURRENT}]

    manager.set("db", {"username": "app", "password": "old"})
    rotated = manager.rotate("db")
    assert rotated["username"] == "app" and rotated["password"] != "old"

    manager.set("opaque", {"cert": "x"})
    with pytest.raises(UnsupportedOperation):
        manager.rotate("opaque")


def test_rotate_all_reports_each_and_continues_past_failures(manager) -> None:
    manager.set_many(
        {"api_key_ncbi": "a", "ncbi_api_key": "b", "api_key_bad": {"no": "password"}, "other": "c"}
    )
    report = manager.rotate_all(pattern="api_key")
    assert sorted(report.rotated) == ["api_key_ncbi", "ncbi_api_key"]
    assert list(report.failed) == ["api_key_bad"]
    assert not report.ok
    assert manager.get("other") == "c"
    assert all("a" != r.error for r in report.results)
    glob = manager.rotate_all(pattern="api_key_*")
    assert sorted(r.name for r in glob.results) == ["api_key_bad", "api_key_ncbi"]


def test_cache_is_thread_safe_and_never_recaches_stale(provider, clock) -> None:
    manager = SecretsManager(provider, cache_ttl=300, clock=clock)
    manager.set("k", "v0")
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                manager.get("k")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(1, 200):
        manager.set("k", f"v{i}")
        assert manager.get("k") == f"v{i}"
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert manager.get("k") == "v199"
