"""The local encrypted store: nothing readable on disk, safe across processes, loud on damage."""

from __future__ import annotations

import multiprocessing
import os
import stat
import threading
import time
from multiprocessing.connection import Connection

import pytest

from rotation.errors import ConfigurationError, InvalidSecretName, SecretNotFound, StoreCorrupted
from rotation.providers.local import LocalProvider, generate_key
from rotation.values import Stage


def _files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _secret_files(root) -> dict[str, bytes]:
    return {k: v for k, v in _files(root).items() if k.startswith("secrets/")}


def test_nothing_readable_on_disk(tmp_path) -> None:
    provider = LocalProvider(tmp_path)
    provider.write("db_password_name_marker", "secure_password_123")
    provider.write("api/structured", {"username": "user_marker", "password": "pw_marker"})
    files = _files(tmp_path)
    assert {"key", ".lock"} <= set(files) and len(_secret_files(tmp_path)) == 2
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
            assert needle.decode() not in name, (needle, name)


def test_key_file_is_private_and_reused(tmp_path) -> None:
    LocalProvider(tmp_path).write("k", "v")
    mode = stat.S_IMODE(os.stat(tmp_path / "key").st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(tmp_path).st_mode) == 0o700
    assert LocalProvider(tmp_path).read("k").value == "v"


def test_wrong_key_is_a_clear_error_and_never_overwrites(tmp_path) -> None:
    LocalProvider(tmp_path, key=generate_key()).write("k", "v")
    before = _files(tmp_path)
    with pytest.raises(StoreCorrupted, match="not the one it was written with"):
        LocalProvider(tmp_path, key=generate_key())
    assert _files(tmp_path) == before


def test_corrupted_file(tmp_path) -> None:
    key = generate_key()
    LocalProvider(tmp_path, key=key).write("k", "v")
    [path] = (tmp_path / "secrets").iterdir()
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(StoreCorrupted):
        LocalProvider(tmp_path, key=key).write("k", "other")
    assert path.read_bytes() == bytes(blob)
    path.write_bytes(b"garbage")
    with pytest.raises(StoreCorrupted, match="not a Keyturn local store"):
        LocalProvider(tmp_path, key=key).read("k")


def test_a_file_moved_onto_another_secret_does_not_decrypt(tmp_path) -> None:
    provider = LocalProvider(tmp_path)
    provider.write("a", "value-a")
    provider.write("b", "value-b")
    path_a, path_b = (tmp_path / "secrets" / f"{provider._file_id(n)}.enc" for n in "ab")
    path_b.write_bytes(path_a.read_bytes())
    with pytest.raises(StoreCorrupted):
        LocalProvider(tmp_path).read("b")


def test_a_write_touches_only_its_own_file(tmp_path) -> None:
    provider = LocalProvider(tmp_path)
    for i in range(20):
        provider.write(f"s{i}", "v")
    before = _secret_files(tmp_path)
    provider.write("s7", "changed")
    after = _secret_files(tmp_path)
    assert [k for k in after if after[k] != before[k]] == [f"secrets/{provider._file_id('s7')}.enc"]


def _legacy_store(directory, key: str, secrets: dict[str, str]) -> bytes:
    """A store as earlier versions wrote it: every secret in one sealed store.enc."""
    import base64
    import json as json_

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from rotation.providers.store import VersionedStore

    store = VersionedStore()
    for name, value in secrets.items():
        store.write(name, value)
    magic, nonce = b"KEYTURN-LOCAL-1\n", os.urandom(12)
    cipher = AESGCM(base64.urlsafe_b64decode(key))
    blob = magic + nonce + cipher.encrypt(nonce, json_.dumps(store.state).encode(), magic)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "store.enc").write_bytes(blob)
    return blob


def test_a_single_file_store_is_converted_on_first_use(tmp_path) -> None:
    key = generate_key()
    _legacy_store(tmp_path, key, {"a": "1", "b/c": "2"})
    provider = LocalProvider(tmp_path, key=key)
    assert provider.list() == ["a", "b/c"] and provider.read("b/c").value == "2"
    assert not (tmp_path / "store.enc").exists() and len(_secret_files(tmp_path)) == 2
    provider.write("a", "3")
    assert LocalProvider(tmp_path, key=key).read("a").value == "3"


def test_a_single_file_store_with_the_wrong_key_is_left_as_it_was(tmp_path) -> None:
    blob = _legacy_store(tmp_path, generate_key(), {"a": "1"})
    with pytest.raises(StoreCorrupted, match="not the one it was written with"):
        LocalProvider(tmp_path, key=generate_key())
    assert (tmp_path / "store.enc").read_bytes() == blob and not (tmp_path / "secrets").exists()


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
    assert not [p for p in tmp_path.rglob(".secret-*")]


def test_writers_lock_is_the_one_filelock_takes(tmp_path) -> None:
    """A process still locking with ``filelock`` (an earlier version) and this one exclude each
    other: both ``flock`` the same ``.lock``."""
    from filelock import FileLock, Timeout

    provider = LocalProvider(tmp_path)
    provider.write("k", "v0")
    other = FileLock(str(tmp_path / ".lock"))
    other.acquire()
    writer = threading.Thread(target=provider.write, args=("k", "v1"))
    try:
        writer.start()
        writer.join(0.5)
        assert writer.is_alive() and provider.read("k").value == "v0"
    finally:
        other.release()
    writer.join(10)
    assert not writer.is_alive() and provider.read("k").value == "v1"
    with provider._lock, pytest.raises(Timeout):  # and the other way round
        FileLock(str(tmp_path / ".lock")).acquire(timeout=0.2)


def _forked_write(provider: LocalProvider, done: Connection) -> None:
    provider.write("k", "child")
    done.send(time.monotonic())


def test_a_child_forked_while_the_parent_holds_the_lock_waits_for_it(tmp_path) -> None:
    """Celery prefork children fork after the provider exists, maybe mid-write: a child must not
    share the parent's hold on the lock (flock belongs to the open file, which fork shares)."""
    provider = LocalProvider(tmp_path)
    provider.write("k", "parent")
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    with provider._thread_lock, provider._lock:
        child = ctx.Process(target=_forked_write, args=(provider, send))
        child.start()
        time.sleep(0.5)
        released = time.monotonic()
    child.join(30)
    assert child.exitcode == 0
    assert receive.recv() >= released
    assert provider.read("k").value == "child"
    provider.write("k", "parent again")  # the parent's lock still works after the fork
    assert LocalProvider(tmp_path).read("k").value == "parent again"


def test_a_removed_lock_file_is_made_again(tmp_path) -> None:
    provider = LocalProvider(tmp_path)
    provider.write("k", "v0")
    (tmp_path / ".lock").unlink()
    provider.write("k", "v1")
    assert (tmp_path / ".lock").exists() and LocalProvider(tmp_path).read("k").value == "v1"


class _CountingCipher:
    """Wraps the provider's AESGCM and counts decryptions."""

    def __init__(self, cipher) -> None:  # type: ignore[no-untyped-def]
        self.cipher, self.decrypted = cipher, 0

    def encrypt(self, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        return self.cipher.encrypt(nonce, data, aad)

    def decrypt(self, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        self.decrypted += 1
        return self.cipher.decrypt(nonce, data, aad)


def test_reads_after_our_own_writes_decrypt_nothing(tmp_path) -> None:
    provider = LocalProvider(tmp_path)
    provider.write("k", "v0")
    cipher = provider._cipher = _CountingCipher(provider._cipher)  # type: ignore[assignment]
    provider.stage_pending("k", "v1", token="t1")
    assert provider.read("k", stage=Stage.PENDING).value == "v1"
    provider.promote("k", token="t1")
    assert (
        provider.read("k").value == "v1" and provider.read("k", stage=Stage.PREVIOUS).value == "v0"
    )
    assert cipher.decrypted == 0
    other = LocalProvider(tmp_path)  # another process's view: reads the files
    assert other.read("k").value == "v1" and other.versions("k")[-1].token == "t1"


def test_a_change_that_writes_nothing_leaves_the_file_as_it_was(tmp_path) -> None:
    provider = LocalProvider(tmp_path)
    provider.write("k", "v0")
    provider.stage_pending("k", "v1", token="t1")
    provider.promote("k", token="t1")
    [path] = (tmp_path / "secrets").iterdir()
    before = path.stat()
    provider.promote("k", token="t1")  # already current: idempotent
    provider.stage_pending("k", "v1", token="t1")  # same token and value: idempotent
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_another_writer_is_seen_even_when_inodes_and_sizes_repeat(tmp_path, monkeypatch) -> None:
    """Another process's cache must notice every new version: the inode of the version before
    last is reused at once and the size is often the same, so the mtime moves forward on each
    write, even with a clock that stands still."""
    import rotation.providers.local as local

    frozen = 1_700_000_000_000_000_000
    monkeypatch.setattr(local.time, "time_ns", lambda: frozen)
    reader, writer = LocalProvider(tmp_path), LocalProvider(tmp_path)
    writer.write("k", "v-000")
    stamps = []
    for i in range(1, 30):
        assert reader.read("k").value == f"v-{2 * i - 2:03d}"
        writer.write("k", f"v-{2 * i - 1:03d}")
        writer.write("k", f"v-{2 * i:03d}")  # the inode the reader cached is free again
        stamps.append(next((tmp_path / "secrets").iterdir()).stat().st_mtime_ns)
    assert stamps == [frozen + 2 * i for i in range(1, 30)]


def test_a_failed_write_leaves_no_trace_in_the_cache(tmp_path, monkeypatch) -> None:
    """The stage rules change the cached record in place: a write that fails must not leave
    the change readable in this process."""
    import rotation.providers.local as local

    provider = LocalProvider(tmp_path)
    provider.write("k", "v0")

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(local.os, "replace", disk_full)
    with pytest.raises(OSError):
        provider.stage_pending("k", "v1", token="t1")
    monkeypatch.undo()
    with pytest.raises(SecretNotFound):
        provider.read("k", stage=Stage.PENDING)
    assert provider.read("k").value == "v0" and len(provider.versions("k")) == 1
    assert not list(tmp_path.rglob(".secret-*"))
    provider.stage_pending("k", "v1", token="t1")
    assert LocalProvider(tmp_path).read("k", stage=Stage.PENDING).value == "v1"


def test_without_flock_the_lock_falls_back_to_filelock(tmp_path, monkeypatch) -> None:
    import errno

    import rotation.providers.local as local

    def no_flock(fd: int, operation: int) -> None:
        raise OSError(errno.ENOSYS, "Function not implemented")

    provider = LocalProvider(tmp_path)
    monkeypatch.setattr(local.fcntl, "flock", no_flock)
    with pytest.warns(UserWarning, match="falling back"):  # filelock says so, as before
        provider.write("k", "v0")
    provider.write("k", "v1")
    assert provider._lock._fallback is not None
    assert LocalProvider(tmp_path).read("k").value == "v1"
