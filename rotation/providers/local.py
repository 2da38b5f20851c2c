"""The local provider: an encrypted file store for development, tests and the embedded setup.

Layout of ``KEYTURN_LOCAL_DIR`` (default ``.keyturn/``, mode 0700):

- ``secrets/<id>.enc`` — one AES-256-GCM sealed file per secret, holding its name, versions and
  values; nothing readable is on disk. ``<id>`` is an HMAC of the name under the store's key, so
  file names reveal nothing either. Header ``KEYTURN-LOCAL-2\\n`` and the file's id are
  authenticated as associated data (a file renamed onto another secret's id does not decrypt),
  then a 12-byte nonce, then the ciphertext. A write touches one file: its cost does not grow
  with the number of secrets stored (``bench/local_store.py``); listing reads every file.
- ``key`` — the 32-byte key, base64, mode 0600, created on first use unless ``KEYTURN_LOCAL_KEY``
  is set. A store without its key is never re-keyed: it is an error.
- ``check.enc`` — a sealed constant: opening the store with another key fails at once
  (``StoreCorrupted``), instead of finding no secrets under the ids that key derives.
- ``.lock`` — serializes writers across processes (``flock``, as ``filelock`` takes it: either
  may hold it against the other). Writes go to a temp file, are fsynced, then renamed into
  place, and the directory is fsynced; readers never take the lock.

Each process caches every record it read or wrote with the file's identity (inode, size,
mtime, ctime): a read of an unchanged file is one ``stat``, and a write leaves its own record
cached, so the reads that follow it neither decrypt nor parse. Every write sets the file's mtime
later than its previous version's, so an identity never comes back for a newer content.

A store written by an earlier version (one sealed ``store.enc`` for everything) is converted on
first use: every secret is written to its own file, then ``store.enc`` is removed. A crash midway
leaves ``store.enc`` in place and the next opening converts again (each file written whole).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from filelock import FileLock

from rotation.errors import ConfigurationError, StoreCorrupted
from rotation.providers.base import AccessCheck
from rotation.providers.store import DEFAULT_MAX_VERSIONS, VersionedStore
from rotation.providers.store_backed import StoreBackedProvider

__all__ = ["LocalProvider", "generate_key"]

T = TypeVar("T")

MAGIC = b"KEYTURN-LOCAL-2\n"
#: The single-file format of earlier versions, converted on first use.
LEGACY_MAGIC = b"KEYTURN-LOCAL-1\n"
NONCE_BYTES = 12
KEY_BYTES = 32
DEFAULT_DIR = ".keyturn"
_NAME_CONTEXT = b"keyturn-local-name\0"


def generate_key() -> str:
    """A fresh key in the form ``KEYTURN_LOCAL_KEY`` expects (url-safe base64 of 32 bytes)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def _decode_key(text: str, source: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.strip().encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        key = b""
    if len(key) != KEY_BYTES:
        raise ConfigurationError(
            f"{source} must be url-safe base64 of {KEY_BYTES} bytes; make one with "
            "`python -c 'from rotation.providers.local import generate_key as g; print(g())'`."
        )
    return key


def _fsync_dir(directory: str | Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _temp_file(prefix: str) -> tuple[int, str]:
    """A new file ``<prefix><random>``, mode 0600, open for writing (what ``tempfile.mkstemp``
    does, without its per-call setup)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    while True:
        tmp = f"{prefix}{secrets.token_hex(8)}"
        try:
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue


def _replace_durably(
    fd: int,
    tmp: str,
    blob: bytes,
    path: str | Path,
    directory: str | Path,
    mtime_ns: int | None = None,
) -> None:
    """Write ``blob`` to the new temp file ``tmp`` (open as ``fd``, which this closes), set its
    mtime, fsync it, rename it over ``path`` and fsync ``directory``; on failure the temp file
    is removed."""
    try:
        try:
            written = 0
            while written < len(blob):
                written += os.write(fd, blob[written:])
            if mtime_ns is not None:
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


#: A file's identity: (inode, size, mtime, ctime). Files are replaced, never changed in place.
Identity = tuple[int, int, int, int]


def _identity(st: os.stat_result) -> Identity:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


#: ``flock`` is missing on this filesystem: ``filelock`` falls back to a lock file of its own.
_NO_FLOCK = frozenset({errno.ENOSYS, errno.EOPNOTSUPP})


class _WriterLock:
    """The writers' lock across processes: ``flock`` on ``.lock``, opened for each hold.

    Not an fd held for the process's life: a lock taken with ``flock`` belongs to the open file,
    which a forked child shares with its parent, so a held fd would let a Celery prefork child
    and its parent both "hold" it. Opening per hold costs an ``open`` and a ``close`` (a few
    microseconds); ``filelock.FileLock`` flocks the same file the same way, with ~0.2 ms of
    bookkeeping per hold, and stays the fallback where the filesystem has no ``flock``. Callers
    serialize the threads of a process (``LocalProvider._thread_lock``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1
        self._fallback: FileLock | None = None

    def __enter__(self) -> None:
        if self._fallback is not None:
            self._fallback.acquire()
            return
        while True:
            fd, created = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                # the file locked must still be the one at the path (not removed meanwhile)
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            except OSError as exc:
                os.close(fd)
                if exc.errno not in _NO_FLOCK:
                    raise
                if created:  # filelock's own fallback marks a hold by creating the file
                    os.unlink(self.path)
                self._fallback = FileLock(self.path)
                self._fallback.acquire()
                return
            except BaseException:
                os.close(fd)
                raise
            if same:
                self._fd = fd
                return
            os.close(fd)

    def _open(self) -> tuple[int, bool]:
        """The lock file open, and whether this call created it."""
        try:
            return os.open(self.path, os.O_RDWR | os.O_CLOEXEC), False
        except FileNotFoundError:
            pass
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            return os.open(self.path, flags, 0o600), True
        except FileExistsError:  # another process created it meanwhile
            return os.open(self.path, os.O_RDWR | os.O_CLOEXEC), False

    def __exit__(self, *exc_info: object) -> None:
        fd, self._fd = self._fd, -1
        if fd < 0:
            if self._fallback is not None:
                self._fallback.release()
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def forget_after_fork(self) -> None:
        """In a child forked while the parent held the lock: drop the parent's hold without
        releasing it (an unlock here would release the parent's lock)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


_providers: weakref.WeakSet[LocalProvider] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for provider in list(_providers):
        provider._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class LocalProvider(StoreBackedProvider):
    """Secrets in encrypted files, one per secret, safe for several processes at once."""

    name = "local"

    def __init__(
        self,
        directory: str | os.PathLike[str] = DEFAULT_DIR,
        key: str | None = None,
        max_versions: int = DEFAULT_MAX_VERSIONS,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.secrets_dir = self.directory / "secrets"
        self.legacy_path = self.directory / "store.enc"
        self.max_versions = max_versions
        key_bytes = self._load_key(key)
        self._cipher = AESGCM(key_bytes)
        self._name_key = hmac.new(key_bytes, _NAME_CONTEXT, hashlib.sha256).digest()
        self._lock = _WriterLock(str(self.directory / ".lock"))
        self._thread_lock = threading.Lock()
        self._secrets_str = str(self.secrets_dir)
        self._secrets_prefix = os.path.join(self._secrets_str, "")
        #: file id -> (file identity, decrypted entry, its plaintext): what this process last
        #: read or wrote; a read of an unchanged file is one stat.
        self._cached: dict[str, tuple[Identity, dict[str, Any], bytes]] = {}
        #: name -> file id (an HMAC per name, computed once).
        self._file_ids: dict[str, str] = {}
        _providers.add(self)
        self.check_path = self.directory / "check.enc"
        if self.check_path.exists():
            self._open(self.check_path, MAGIC + b"check", self.check_path.read_bytes())
        if self.legacy_path.exists():
            self._convert_legacy()

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> LocalProvider:
        return cls(
            directory=environ.get("KEYTURN_LOCAL_DIR") or DEFAULT_DIR,
            key=environ.get("KEYTURN_LOCAL_KEY") or None,
        )

    def _has_store(self) -> bool:
        return (
            self.legacy_path.exists()
            or (self.directory / "check.enc").exists()
            or (self.secrets_dir.is_dir() and any(self.secrets_dir.iterdir()))
        )

    def _load_key(self, key: str | None) -> bytes:
        if key is not None:
            return _decode_key(key, "KEYTURN_LOCAL_KEY")
        key_path = self.directory / "key"
        try:
            return _decode_key(key_path.read_text(), f"The key file {key_path}")
        except FileNotFoundError:
            pass
        if self._has_store():
            raise StoreCorrupted(
                f"The local store in {self.directory} exists but its key file {key_path} is "
                "missing: restore the key file or set KEYTURN_LOCAL_KEY. Nothing was changed."
            )
        fresh = generate_key()
        try:
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first: use theirs
            return _decode_key(key_path.read_text(), f"The key file {key_path}")
        with os.fdopen(fd, "w") as handle:
            handle.write(fresh + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return _decode_key(fresh, "the new key")

    # --- one sealed file per secret --------------------------------------------------------

    def _file_id(self, name: str) -> str:
        file_id = self._file_ids.get(name)
        if file_id is None:
            digest = hmac.new(self._name_key, name.encode(), hashlib.sha256).hexdigest()
            file_id = self._file_ids[name] = digest[:40]
        return file_id

    def _path(self, file_id: str) -> str:
        return f"{self._secrets_prefix}{file_id}.enc"

    def _after_fork(self) -> None:
        """In a forked child: a lock another thread of the parent held is not held here."""
        self._thread_lock = threading.Lock()
        self._lock.forget_after_fork()

    def _open(self, path: str | Path, aad: bytes, blob: bytes, magic: bytes = MAGIC) -> bytes:
        header = blob[: len(magic)]
        nonce = blob[len(magic) : len(magic) + NONCE_BYTES]
        if header != magic or len(nonce) != NONCE_BYTES:
            raise StoreCorrupted(
                f"{path} is not a Keyturn local store file (bad header or truncated). "
                "Nothing was changed; restore it from a backup or move it aside."
            )
        try:
            return self._cipher.decrypt(nonce, blob[len(magic) + NONCE_BYTES :], aad)
        except InvalidTag:
            raise StoreCorrupted(
                f"Cannot decrypt {path}: the key (KEYTURN_LOCAL_KEY or "
                f"{self.directory / 'key'}) is not the one it was written with, or the file is "
                "corrupted. Nothing was changed."
            ) from None

    def _read_cached(self, file_id: str) -> tuple[Identity, dict[str, Any], bytes] | None:
        """(identity, decrypted ``{"name", "record"}``, its plaintext) of one file, or None when
        it does not exist; read again (stat first) only when the file changed."""
        path = self._path(file_id)
        cached = self._cached.get(file_id)
        try:
            if cached is not None and _identity(os.stat(path)) == cached[0]:
                return cached
            with open(path, "rb") as handle:
                identity = _identity(os.fstat(handle.fileno()))
                blob = handle.read()
        except FileNotFoundError:
            self._cached.pop(file_id, None)
            return None
        plaintext = self._open(path, MAGIC + file_id.encode(), blob)
        try:
            entry: dict[str, Any] = json.loads(plaintext)
            entry["name"], entry["record"]
        except (ValueError, KeyError, TypeError):
            raise StoreCorrupted(f"{path} decrypted but does not hold a secret.") from None
        cached = self._cached[file_id] = (identity, entry, plaintext)
        return cached

    @staticmethod
    def _plaintext(name: str, record: dict[str, Any]) -> bytes:
        return json.dumps({"name": name, "record": record}, separators=(",", ":")).encode()

    def _write_record(
        self, file_id: str, name: str, record: dict[str, Any] | None, plaintext: bytes = b""
    ) -> None:
        """Replace one file, durably (temp file, fsync, rename, directory fsync); the caller
        holds the writers' lock. What was written stays cached: the next read is one stat."""
        path = self._path(file_id)
        if record is None:
            self._cached.pop(file_id, None)
            Path(path).unlink(missing_ok=True)
            return
        plaintext = plaintext or self._plaintext(name, record)
        nonce = secrets.token_bytes(NONCE_BYTES)
        blob = MAGIC + nonce + self._cipher.encrypt(nonce, plaintext, MAGIC + file_id.encode())
        temp_prefix = f"{self._secrets_prefix}.secret-"
        try:
            fd, tmp = _temp_file(temp_prefix)
        except FileNotFoundError:  # the first write to this store
            self._seal_check()
            self.secrets_dir.mkdir(mode=0o700, exist_ok=True)
            fd, tmp = _temp_file(temp_prefix)
        # Each version of a file gets a later mtime than the one it replaces (read under this
        # lock), even when the clock is coarse or went back: the freed inode of a version before
        # is reused at once, often at the same size, so (inode, size, mtime) must not repeat.
        previous = self._cached.pop(file_id, None)
        stamp = time.time_ns()
        if previous is not None:
            stamp = max(stamp, previous[0][2] + 1)
        _replace_durably(fd, tmp, blob, path, self._secrets_str, stamp)
        # under the writers' lock nobody else replaces the file: this identity is what we wrote
        # (taken after the rename, which changes the ctime)
        identity = _identity(os.stat(path))
        self._cached[file_id] = (identity, {"name": name, "record": record}, plaintext)

    def _seal_check(self) -> None:
        """Write ``check.enc`` (first write only): later openings verify their key with it."""
        if self.check_path.exists():
            return
        nonce = secrets.token_bytes(NONCE_BYTES)
        blob = MAGIC + nonce + self._cipher.encrypt(nonce, b"keyturn", MAGIC + b"check")
        fd, tmp = _temp_file(str(self.directory / ".check-"))
        _replace_durably(fd, tmp, blob, self.check_path, self.directory)

    def _load(
        self,
        name: str | None,
        entries: dict[str, tuple[Identity, dict[str, Any], bytes]] | None = None,
    ) -> VersionedStore:
        """One secret's store (``name``), or every secret's (None: listing)."""
        if entries is None:
            entries = self._entries(name)
        return VersionedStore(
            {"secrets": {n: entry["record"] for n, (_, entry, _) in entries.items()}},
            max_versions=self.max_versions,
        )

    def _entries(self, name: str | None) -> dict[str, tuple[Identity, dict[str, Any], bytes]]:
        """Cache entries by name: of ``name`` (if it exists), or of every secret (None)."""
        found: dict[str, tuple[Identity, dict[str, Any], bytes]] = {}
        if name is not None:
            cached = self._read_cached(self._file_id(name))
            if cached is not None:
                found[name] = cached
        elif self.secrets_dir.is_dir():
            for path in sorted(self.secrets_dir.glob("*.enc")):
                cached = self._read_cached(path.stem)
                if cached is not None:
                    found[cached[1]["name"]] = cached
        return found

    def _convert_legacy(self) -> None:
        """Write every secret of a single-file store to its own file, then remove the old file."""
        with self._thread_lock, self._lock:
            try:
                blob = self.legacy_path.read_bytes()
            except FileNotFoundError:  # another process converted it meanwhile
                return
            plaintext = self._open(self.legacy_path, LEGACY_MAGIC, blob, LEGACY_MAGIC)
            try:
                records: dict[str, Any] = json.loads(plaintext)["secrets"]
            except (ValueError, KeyError, TypeError):
                raise StoreCorrupted(
                    f"{self.legacy_path} decrypted but does not hold a store."
                ) from None
            for name, record in records.items():
                self._write_record(self._file_id(name), name, record)
            self.legacy_path.unlink()
            _fsync_dir(self.directory)

    # --- StoreBackedProvider ---------------------------------------------------------------

    def _view(self, read: Callable[[VersionedStore], T], name: str | None = None) -> T:
        return read(self._load(name))

    def _mutate(self, change: Callable[[VersionedStore], T], name: str | None = None) -> T:
        with self._thread_lock, self._lock:
            entries = self._entries(name)
            before = {n: plaintext for n, (_, _, plaintext) in entries.items()}
            store = self._load(name, entries)
            try:
                result = change(store)
                after: dict[str, Any] = store.state["secrets"]
                for changed in set(before) | set(after):
                    record = after.get(changed)
                    if record is None:
                        self._write_record(self._file_id(changed), changed, None)
                        continue
                    plaintext = self._plaintext(changed, record)
                    if plaintext != before.get(changed):
                        self._write_record(self._file_id(changed), changed, record, plaintext)
            except BaseException:
                # ``change`` works on the cached records themselves: forget what was not written
                for changed in set(before) | set(store.state["secrets"]):
                    file_id = self._file_id(changed)
                    cached = self._cached.get(file_id)
                    if cached is not None and cached[2] == before.get(changed):
                        del self._cached[file_id]
                raise
            return result

    def check_access(self, names: Sequence[str]) -> list[AccessCheck]:
        """The secrets decrypt, the store lists, its directory is writable; changes nothing."""
        from rotation.providers.access_local import check_directory

        return check_directory(self.directory, names, self.read, self.list)
