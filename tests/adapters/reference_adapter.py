"""The reference adapter of the ``external`` rotator: a small SaaS-like key issuer that keeps at
most two valid API keys per account, reachable over HTTPS (``serve``) or as a command
(``python -m tests.adapters.reference_adapter STATE_FILE``).

It is also the *documentation by example* of an adapter (docs/rotators.md):

- verify ``X-Keyturn-Signature`` (HMAC-SHA256 of the exact body) and refuse a request older
  than five minutes (``timestamp``), so a captured request cannot be replayed later;
- be idempotent on the run's ``token``: ``create`` asked twice for one token returns the key it
  issued the first time, and every other step may be repeated;
- create issues a *pending* key (it does not authenticate yet); apply activates it; test calls
  the API with it; retire deletes the old key; undo deletes this run's key, keeping the
  current one;
- answer ``{"value": ...}`` to create, ``{}`` otherwise, or a 4xx/5xx with ``{"error": ...}``
  (never a value in an error).

The "API" is ``GET /api/whoami`` with ``Authorization: Bearer <key>``: 200 for an active key,
401 otherwise (:meth:`KeyStore.accepts` answers the same in-process).
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import hmac
import ipaddress
import json
import secrets
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["Adapter", "KeyStore", "make_certificates", "serve"]

MAX_KEYS = 2
MAX_AGE = 300


@dataclass
class KeyStore:
    """The issuer's state: key -> "pending" | "active", and the key each token created."""

    hmac_key: str
    keys: dict[str, str] = field(default_factory=dict)
    by_token: dict[str, str] = field(default_factory=dict)
    #: step -> how many requests it got (signature refusals counted as "refused").
    calls: Counter[str] = field(default_factory=Counter)
    #: step -> requests that arrived over HTTPS (counted before any delay).
    arrived: Counter[str] = field(default_factory=Counter)
    #: Steps that answer 422, as a target refusing the new key would.
    refuse: set[str] = field(default_factory=set)
    #: step -> seconds to wait before answering (a slow adapter).
    delay: dict[str, float] = field(default_factory=dict)
    #: Steps whose answer is trickled a byte at a time (each byte within any socket timeout).
    trickle: set[str] = field(default_factory=set)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def issue_initial(self) -> str:
        """An active key to start the secret with."""
        with self.lock:
            key = "sk-" + secrets.token_urlsafe(24)
            self.keys[key] = "active"
            return key

    def accepts(self, key: object) -> bool:
        with self.lock:
            return isinstance(key, str) and self.keys.get(key) == "active"

    def handle(self, body: bytes, signature: str | None) -> tuple[int, dict[str, Any]]:
        """One request: (HTTP status, JSON answer)."""
        expected = "sha256=" + hmac.new(self.hmac_key.encode(), body, hashlib.sha256).hexdigest()
        if signature is None or not hmac.compare_digest(signature, expected):
            self.calls["refused"] += 1
            return 401, {"error": "bad signature"}
        request = json.loads(body)
        if abs(time.time() - int(request["timestamp"])) > MAX_AGE:
            self.calls["refused"] += 1
            return 401, {"error": "stale request"}
        step = request["step"]
        with self.lock:
            self.calls[step] += 1
            if step in self.refuse:
                return 422, {"error": f"{step} refused by the issuer", "retryable": False}
            return getattr(self, f"_{step}")(request)

    def _create(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        known = self.by_token.get(request["token"])
        if known is not None and known in self.keys:
            return 200, {"value": known}
        if not self.accepts(request["current"]):
            return 409, {"error": "the current key is not active here", "retryable": False}
        if len(self.keys) >= MAX_KEYS:
            return 409, {"error": "two keys exist: retire one first", "retryable": False}
        key = "sk-" + secrets.token_urlsafe(24)
        self.keys[key] = "pending"
        self.by_token[request["token"]] = key
        return 200, {"value": key}

    def _apply(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if request["value"] not in self.keys:
            return 409, {"error": "unknown key: create it first", "retryable": False}
        self.keys[request["value"]] = "active"
        return 200, {}

    def _test(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if not self.accepts(request["value"]):
            return 422, {"error": "the new key does not authenticate", "retryable": False}
        return 200, {}

    def _retire(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if not self.accepts(request["value"]):
            return 409, {"error": "refusing to retire: the current key is not active"}
        if request["old"] != request["value"]:
            self.keys.pop(request["old"], None)
        return 200, {}

    def _undo(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        mine = request.get("value")
        if isinstance(mine, str) and mine != request["current"]:
            self.keys.pop(mine, None)
        return 200, {}

    # --- a state file, for the command form -------------------------------------------------

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"hmac_key": self.hmac_key, "keys": self.keys,
                                    "by_token": self.by_token, "calls": dict(self.calls),
                                    "refuse": sorted(self.refuse)}))  # fmt: skip

    @classmethod
    def load(cls, path: Path) -> KeyStore:
        data = json.loads(path.read_text())
        return cls(data["hmac_key"], data["keys"], data["by_token"], Counter(data["calls"]),
                   set(data["refuse"]))  # fmt: skip


@contextmanager
def locked(path: Path) -> Iterator[KeyStore]:
    """The state in ``path``, saved back on exit, under an exclusive lock."""
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        store = KeyStore.load(path)
        yield store
        store.save(path)


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1/localhost signed by it: (ca, cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keyturn test adapter CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
        ]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = (directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@dataclass
class Adapter:
    """A running HTTPS reference adapter."""

    store: KeyStore
    url: str
    ca_file: Path
    server: ThreadingHTTPServer

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve(store: KeyStore, directory: Path) -> Adapter:
    """Serve ``store`` over HTTPS on a free port of 127.0.0.1, in a daemon thread."""
    import ssl

    ca, cert, key = make_certificates(directory)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: bodies hold keys
            return

        def _answer(self, status: int, answer: dict[str, Any], step: str = "") -> None:
            data = json.dumps(answer).encode()
            if step in store.trickle:
                head = (f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(data)}\r\n\r\n").encode() + data  # fmt: skip
                for byte in head:  # each byte well inside a socket timeout, the whole not
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.2)
                return
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            step = self.headers.get("X-Keyturn-Step", "")
            store.arrived[step] += 1
            time.sleep(store.delay.get(step, 0))
            status, answer = store.handle(body, self.headers.get("X-Keyturn-Signature"))
            try:
                self._answer(status, answer, step)
            except OSError:
                pass  # the caller gave up (its time budget)

        def do_GET(self) -> None:
            auth = self.headers.get("Authorization", "")
            ok = self.path == "/api/whoami" and store.accepts(auth.removeprefix("Bearer "))
            self._answer(200 if ok else 401, {"ok": ok})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return Adapter(store, f"https://127.0.0.1:{server.server_address[1]}/rotate", ca, server)


def main(argv: list[str]) -> int:
    """The command form: the request on stdin, the answer on stdout; 0 ok, 1 refused."""
    import os

    body = sys.stdin.buffer.read()
    with locked(Path(argv[0])) as store:
        status, answer = store.handle(body, os.environ.get("KEYTURN_SIGNATURE"))
    sys.stdout.write(json.dumps(answer))
    return 0 if status < 300 else 75 if status >= 500 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
