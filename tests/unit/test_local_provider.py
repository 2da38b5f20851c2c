"""The local encrypted store: nothing readable on disk, safe across processes, loud on damage."""

from __future__ import annotations

import multiprocessing
import os
import stat

import pytest

from rotation.errors import ConfigurationError, InvalidSecretName, StoreCorrupted
from rotation.providers.local import LocalProvider, generate_key


def test_nothing_readable_on_disk(tmp_path) -> None:
    provider = LocalProvider(tmp_path)
    provider.write("db_password_name_marker", "secure_password_123")
    provider.write("api/structured", {"username": "user_marker", "password": "pw_marker"})
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert set(files) == {"store.enc", "key", ".lock"}
    for needle in [
        b"secure_password_123",
        b"db_password_name_marker",
        b"user_marker",
        b"pw_marker",
        b"structured",
        b"username",
    ]:
        for name, content in files.items():
            assert needle not in content, (needle, name)


def test_key_file_is_private_and_reused(tmp_path) -> None:
    LocalProvider(tmp_path).write("k", "v")
    mode = stat.S_IMODE(os.stat(tmp_path / "key").st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(tmp_path).st_mode) == 0o700
    assert LocalProvider(tmp_path).read("k").value == "v"


def test_wrong_key_is_a_clear_error_and_never_overwrites(tmp_path) -> None:
    LocalProvider(tmp_path, key=generate_key()).write("k", "v")
    before = (tmp_path / "store.enc").read_bytes()
    intruder = LocalProvider(tmp_path, key=generate_key())
    with pytest.raises(StoreCorrupted, match="not the one it was written with"):
        intruder.read("k")
    with pytest.raises(StoreCorrupted):
        intruder.write("k2", "v2")
    assert (tmp_path / "store.enc").read_bytes() == before


def test_corrupted_file(tmp_path) -> None:
    key = generate_key()
    LocalProvider(tmp_path, key=key).write("k", "v")
    blob = bytearray((tmp_path / "store.enc").read_bytes())
    blob[-1] ^= 0xFF
    (tmp_path / "store.enc").write_bytes(bytes(blob))
    with pytest.raises(StoreCorrupted):
        LocalProvider(tmp_path, key=key).write("k", "other")
    assert (tmp_path / "store.enc").read_bytes() == bytes(blob)
    (tmp_path / "store.enc").write_bytes(b"garbage")
    with pytest.raises(StoreCorrupted, match="not a Keyturn local store"):
        LocalProvider(tmp_path, key=key).read("k")


def test_missing_key_file_with_existing_store(tmp_path) -> None:
    LocalProvider(tmp_path).write("k", "v")
    (tmp_path / "key").unlink()
    with pytest.raises(StoreCorrupted, match="key file"):
        LocalProvider(tmp_path)
    assert not (tmp_path / "key").exists()


def test_bad_key_setting(tmp_path) -> None:
    with pytest.raises(ConfigurationError, match="KEYTURN_LOCAL_KEY"):
        LocalProvider(tmp_path, key="not-a-key")


def test_from_env(tmp_path) -> None:
    key = generate_key()
    env = {"KEYTURN_LOCAL_DIR": str(tmp_path / "d"), "KEYTURN_LOCAL_KEY": key}
    LocalProvider.from_env(env).write("k", "v")
    assert LocalProvider.from_env(env).read("k").value == "v"
    assert not (tmp_path / "d" / "key").exists()


def test_bounded_history_keeps_stages(tmp_path) -> None:
    provider = LocalProvider(tmp_path, max_versions=3)
    for i in range(10):
        provider.write("k", f"v{i}")
    versions = provider.versions("k")
    assert len(versions) == 3
    assert provider.read("k").value == "v9"


def test_refuses_escaping_names(tmp_path) -> None:
    provider = LocalProvider(tmp_path)
    for bad in ["../../etc/passwd", "/etc/passwd", "a/../../b", "ctl\x07"]:
        with pytest.raises(InvalidSecretName):
            provider.write(bad, "v")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key"]


def _writer(directory: str, worker: int, count: int) -> None:
    provider = LocalProvider(directory)
    for i in range(count):
        provider.write(f"w{worker}/s{i}", f"value-{worker}-{i}")


def test_four_processes_two_hundred_writes_each_lose_nothing(tmp_path) -> None:
    LocalProvider(tmp_path)  # create the key once, as a deployment would
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 200)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    provider = LocalProvider(tmp_path)
    names = provider.list()
    assert len(names) == 800
    assert provider.read("w3/s199").value == "value-3-199"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".store-")]
