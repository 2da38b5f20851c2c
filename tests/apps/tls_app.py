"""A TLS server that reloads its certificate on rotation, and clients that never stop connecting:
the zero-downtime proof of the ``certificate`` kind.

The server reads its certificate and key through SecretsManager and serves TLS on 127.0.0.1.
``on_rotate`` builds a new SSL context from the new value, swaps it in (connections already
open keep theirs), proves it with a handshake of its own, and returns: the consumer agent then
acknowledges. Client threads connect all the time with a context that trusts only the CA
(``APP_CA``, PEM) and checks the host name ``localhost``; every failed handshake is counted, and
the serial of every certificate served is recorded in the order the server accepted the
connections (its greeting carries that number): a handshake accepted just before a reload ends
after it with the old certificate, which is not the server going back.

Environment: ``APP_SECRET``, ``APP_CA``, ``APP_STATS`` (JSON written twice a second),
``APP_STOP`` (a file whose existence stops the app), ``APP_THREADS``, ``APP_SECONDS``.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cryptography import x509

from rotation import SecretsManager
from rotation.client.events import RotationEvent

SECRET = os.environ["APP_SECRET"]
CA = os.environ["APP_CA"]
STATS = Path(os.environ["APP_STATS"])
STOP = Path(os.environ["APP_STOP"])
THREADS = int(os.environ.get("APP_THREADS", "4"))
SECONDS = float(os.environ.get("APP_SECONDS", "300"))

manager = SecretsManager.from_env()
lock = threading.Lock()
stats: dict[str, Any] = {
    "ok": 0,
    "failed": 0,
    "errors": [],
    "reloads": [],
    "started": time.time(),
}
#: (accept number, serial) of every successful handshake.
handshakes: list[tuple[int, int]] = []


def served() -> list[int]:
    """The serials served, in accept order, each change once."""
    order: list[int] = []
    for _, serial in sorted(handshakes):
        if not order or order[-1] != serial:
            order.append(serial)
    return order


def server_context(value: Any) -> ssl.SSLContext:
    """An SSL server context holding ``value``'s certificate (with its chain) and key. The
    ssl module loads keys from files only: they live in a private directory for a moment."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory(prefix="tls-app-") as directory:
        cert, key = Path(directory) / "cert.pem", Path(directory) / "key.pem"
        cert.write_text(value["certificate"] + value.get("chain", ""))
        key.touch(mode=0o600)
        key.write_text(value["private_key"])
        context.load_cert_chain(cert, key)
    return context


class Server:
    def __init__(self) -> None:
        self.context = server_context(manager.get(SECRET))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def reload(self, value: Any) -> None:
        self.context = server_context(value)  # one assignment: each connection sees one

    def serve(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            self.accepted += 1
            args = (conn, self.context, self.accepted)
            threading.Thread(target=self.handle, args=args, daemon=True).start()

    @staticmethod
    def handle(conn: socket.socket, context: ssl.SSLContext, number: int) -> None:
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok %d\n" % number)
        except (OSError, ssl.SSLError):
            pass  # the client counts its own failures


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=CA)
    context.check_hostname = True
    return context


def handshake(port: int, context: ssl.SSLContext) -> tuple[int, int]:
    """Connect, verify, read the greeting: the server's accept number and the served
    certificate's serial."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
            greeting = b""
            while not greeting.endswith(b"\n") and len(greeting) < 32:
                chunk = tls.recv(32)
                if not chunk:
                    break
                greeting += chunk
    word, _, number = greeting.strip().partition(b" ")
    if word != b"ok" or not number.isdigit():
        raise ConnectionError("no greeting")
    assert der is not None
    return int(number), int(x509.load_der_x509_certificate(der).serial_number)


server: Server | None = None


def on_rotate(event: RotationEvent) -> None:
    assert server is not None
    server.reload(manager.get(SECRET))
    _, serial = handshake(server.port, client_context())  # prove it before acknowledging
    with lock:
        stats["reloads"].append({"version": event.version, "serial": serial, "at": time.time()})


def connect_forever(stop: threading.Event, port: int) -> None:
    context = client_context()
    while not stop.is_set():
        try:
            accepted = handshake(port, context)
            with lock:
                stats["ok"] += 1
                handshakes.append(accepted)
        except Exception as exc:
            with lock:
                stats["failed"] += 1
                stats["errors"] = (stats["errors"] + [f"{type(exc).__name__}: {exc}"])[-5:]
        time.sleep(0.005)


def main() -> None:
    global server
    server = Server()
    manager.on_rotate(SECRET, on_rotate)
    agent = manager.subscribe(heartbeat_ttl=3)
    stop = threading.Event()
    threads = [
        threading.Thread(target=connect_forever, args=(stop, server.port), daemon=True)
        for _ in range(THREADS)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + SECONDS
    while not STOP.exists() and time.monotonic() < deadline:
        with lock:
            snapshot = {
                **stats,
                "served": served(),
                "connected": agent.connected.is_set(),
                "now": time.time(),
            }
        tmp = STATS.with_suffix(".tmp")
        tmp.write_text(json.dumps(snapshot))
        tmp.replace(STATS)
        time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(5)
    with lock:
        STATS.write_text(json.dumps({**stats, "served": served(), "stopped": time.time()}))
    manager.close()


if __name__ == "__main__":
    main()
