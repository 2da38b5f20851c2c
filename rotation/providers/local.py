"""The local provider: an encrypted file store for development, tests and the embedded setup.

Layout of ``KEYTURN_LOCAL_DIR`` (default ``.keyturn/``, mode 0700):

- ``store.enc`` — one AES-256-GCM sealed blob holding every name, version and value; nothing
  readable is on disk. Header ``KEYTURN-LOCAL-1\\n`` (authenticated as associated data), then a
  12-byte nonce, then the ciphertext.
- ``key`` — the 32-byte key, base64, mode 0600, created on first use unless ``KEYTURN_LOCAL_KEY``
  is set. A store without its key is never re-keyed: it is an error.
- ``.lock`` — serializes writers across processes (``filelock``). Writes go to a temp file,
  are fsynced, then renamed over ``store.enc``; readers never take the lock.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import tempfile
import threading
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

MAGIC = b"KEYTURN-LOCAL-1\n"
NONCE_BYTES = 12
KEY_BYTES = 32
DEFAULT_DIR = ".keyturn"


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


class LocalProvider(StoreBackedProvider):
    """Secrets in an encrypted file, safe for several processes at once."""

    name = "local"

    def __init__(
        self,
        directory: str | os.PathLike[str] = DEFAULT_DIR,
        key: str | None = None,
        max_versions: int = DEFAULT_MAX_VERSIONS,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = self.directory / "store.enc"
        self.max_versions = max_versions
        self._cipher = AESGCM(self._load_key(key))
        self._lock = FileLock(str(self.directory / ".lock"))
        self._thread_lock = threading.Lock()
        self._cached: tuple[tuple[int, int, int, int], bytes] | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> LocalProvider:
        return cls(
            directory=environ.get("KEYTURN_LOCAL_DIR") or DEFAULT_DIR,
            key=environ.get("KEYTURN_LOCAL_KEY") or None,
        )

    def _load_key(self, key: str | None) -> bytes:
        if key is not None:
            return _decode_key(key, "KEYTURN_LOCAL_KEY")
        key_path = self.directory / "key"
        try:
            return _decode_key(key_path.read_text(), f"The key file {key_path}")
        except FileNotFoundError:
            pass
        if (self.directory / "store.enc").exists():
            raise StoreCorrupted(
                f"The local store {self.directory / 'store.enc'} exists but its key file "
                f"{key_path} is missing: restore the key file or set KEYTURN_LOCAL_KEY. "
                "Nothing was changed."
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

    # --- file I/O ------------------------------------------------------------------------

    def _read_plaintext(self) -> bytes | None:
        """The decrypted store, or None when no store exists yet. Cached by file identity."""
        try:
            with open(self.path, "rb") as handle:
                st = os.fstat(handle.fileno())
                identity = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                cached = self._cached
                if cached is not None and cached[0] == identity:
                    return cached[1]
                blob = handle.read()
        except FileNotFoundError:
            return None
        plaintext = self._decrypt(blob)
        self._cached = (identity, plaintext)
        return plaintext

    def _decrypt(self, blob: bytes) -> bytes:
        header = blob[: len(MAGIC)]
        nonce = blob[len(MAGIC) : len(MAGIC) + NONCE_BYTES]
        if header != MAGIC or len(nonce) != NONCE_BYTES:
            raise StoreCorrupted(
                f"{self.path} is not a Keyturn local store (bad header or truncated). "
                "Nothing was changed; restore it from a backup or move it aside."
            )
        try:
            return self._cipher.decrypt(nonce, blob[len(MAGIC) + NONCE_BYTES :], MAGIC)
        except InvalidTag:
            raise StoreCorrupted(
                f"Cannot decrypt {self.path}: the key (KEYTURN_LOCAL_KEY or "
                f"{self.directory / 'key'}) is not the one it was written with, or the file is "
                "corrupted. Nothing was changed."
            ) from None

    def _load(self) -> VersionedStore:
        plaintext = self._read_plaintext()
        state: dict[str, Any] | None = None
        if plaintext is not None:
            try:
                state = json.loads(plaintext)
            except ValueError:
                raise StoreCorrupted(f"{self.path} decrypted but does not hold a store.") from None
        return VersionedStore(state, max_versions=self.max_versions)

    def _save(self, store: VersionedStore) -> None:
        plaintext = json.dumps(store.state, separators=(",", ":")).encode()
        nonce = secrets.token_bytes(NONCE_BYTES)
        blob = MAGIC + nonce + self._cipher.encrypt(nonce, plaintext, MAGIC)
        fd, tmp = tempfile.mkstemp(prefix=".store-", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(blob)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    # --- StoreBackedProvider ---------------------------------------------------------------

    def _view(self, read: Callable[[VersionedStore], T]) -> T:
        return read(self._load())

    def _mutate(self, change: Callable[[VersionedStore], T]) -> T:
        with self._thread_lock, self._lock:
            store = self._load()
            result = change(store)
            self._save(store)
            return result

    def check_access(self, names: Sequence[str]) -> list[AccessCheck]:
        """The secrets decrypt, the store lists, its directory is writable; changes nothing."""
        from rotation.providers.access_local import check_directory

        return check_directory(self.directory, names, self.read, self.list)
