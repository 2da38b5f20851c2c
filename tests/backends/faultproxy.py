"""A small threaded proxy that injects faults in front of any HTTP (or TCP) upstream.

    with FaultProxy(upstream=("127.0.0.1", 8200), seed=7) as proxy:
        port = proxy.port                      # point the client at 127.0.0.1:port
        proxy.configure(error_rate=0.3)        # 30% of requests answer 503 without forwarding
        ...
        proxy.stats["errors"]                  # what was injected

Faults, decided per request (``mode="http"``, default) or per connection (``mode="tcp"``):

- ``error_rate`` — answer ``HTTP 503`` without forwarding (nothing reaches the upstream);
- ``drop_rate`` — close the connection without forwarding or answering;
- ``lost_reply_rate`` — forward the request, then close without relaying the answer (the
  upstream applied it; the client never learns): the case check-and-set writes must survive;
- ``latency`` — seconds to wait before handling each request;
- ``rate_limit`` — requests per second (a token bucket holding one second's worth, at least one)
  above which the proxy answers ``HTTP 429 Too Many Requests`` with ``Retry-After: 1`` without
  forwarding, as a throttling backend does (AWS and Azure answer 429 above their quotas).

In HTTP mode every forwarded request is sent upstream with ``Connection: close`` so that each
request gets its own decision. A ``seed`` makes the sequence of decisions reproducible.
Stdlib only; bounded: at most ``max_connections`` at once, every socket has a timeout.
"""

from __future__ import annotations

import random
import selectors
import socket
import threading
import time
from collections import Counter
from types import TracebackType

__all__ = ["FaultProxy"]

_MAX_HEAD = 64 * 1024
_ERROR_BODY = b'{"errors":["fault injected by FaultProxy"]}'
_ERROR_REPLY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(_ERROR_BODY)
) + _ERROR_BODY
_THROTTLE_BODY = b'{"errors":["rate exceeded (FaultProxy)"]}'
_THROTTLE_REPLY = (
    b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(_THROTTLE_BODY)
) + _THROTTLE_BODY
_HOP_HEADERS = (b"connection:", b"keep-alive:", b"proxy-connection:")


class FaultProxy:
    """Forward 127.0.0.1:<port> to ``upstream``, injecting faults configured at runtime."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        mode: str = "http",
        seed: int | None = None,
        max_connections: int = 64,
        io_timeout: float = 30.0,
    ) -> None:
        if mode not in ("http", "tcp"):
            raise ValueError("mode must be 'http' or 'tcp'")
        self.upstream = upstream
        self.mode = mode
        self.io_timeout = io_timeout
        self.stats: Counter[str] = Counter()
        self.port = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._workers: set[threading.Thread] = set()
        self._sockets: set[socket.socket] = set()
        self.configure()

    # --- control ------------------------------------------------------------------------

    def configure(
        self,
        error_rate: float = 0.0,
        latency: float = 0.0,
        drop_rate: float = 0.0,
        lost_reply_rate: float = 0.0,
        rate_limit: float | None = None,
    ) -> None:
        """Set the faults; rates are probabilities whose sum must not exceed 1."""
        rates = (error_rate, drop_rate, lost_reply_rate)
        if min(rates) < 0 or sum(rates) > 1 or latency < 0:
            raise ValueError("rates must be >= 0 and sum to at most 1; latency >= 0")
        if rate_limit is not None and rate_limit <= 0:
            raise ValueError("rate_limit must be a positive number of requests per second")
        with self._lock:
            self.error_rate, self.drop_rate, self.lost_reply_rate = rates
            self.latency = latency
            self.rate_limit = rate_limit
            self._tokens = max(1.0, rate_limit or 0.0)
            self._refilled = time.monotonic()

    def start(self) -> int:
        """Listen on a free port of 127.0.0.1 and return it."""
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0.2)
        self._listener = listener
        self.port = int(listener.getsockname()[1])
        self._acceptor = threading.Thread(target=self._accept_loop, name="faultproxy", daemon=True)
        self._acceptor.start()
        return self.port

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop accepting, close every open connection and wait for the workers."""
        self._stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            for sock in list(self._sockets):
                _close(sock)
            workers = list(self._workers)
        for worker in workers:
            worker.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- plumbing -----------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                self._count("refused")
                client.close()
                continue
            worker = threading.Thread(target=self._serve, args=(client,), daemon=True)
            with self._lock:
                self._workers.add(worker)
            worker.start()

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def _decide(self) -> tuple[str, float]:
        with self._lock:
            if self.rate_limit is not None:
                now = time.monotonic()
                elapsed, self._refilled = now - self._refilled, now
                self._tokens = min(
                    max(1.0, self.rate_limit), self._tokens + elapsed * self.rate_limit
                )
                if self._tokens < 1:
                    return "throttle", self.latency
                self._tokens -= 1
            draw = self._rng.random()
            latency = self.latency
            if draw < self.error_rate:
                return "error", latency
            if draw < self.error_rate + self.drop_rate:
                return "drop", latency
            if draw < self.error_rate + self.drop_rate + self.lost_reply_rate:
                return "lost", latency
            return "forward", latency

    def _track(self, sock: socket.socket) -> socket.socket:
        sock.settimeout(self.io_timeout)
        with self._lock:
            self._sockets.add(sock)
        return sock

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            self._track(client)
            request = _read_request(client) if self.mode == "http" else b""
            if self.mode == "http" and request is None:
                return
            self._count("requests")
            decision, latency = self._decide()
            if latency:
                self._stopping.wait(latency)
            if decision == "error":
                self._count("errors")
                client.sendall(_ERROR_REPLY)
                return
            if decision == "throttle":
                self._count("throttled")
                client.sendall(_THROTTLE_REPLY)
                return
            if decision == "drop":
                self._count("drops")
                return
            upstream = self._track(socket.create_connection(self.upstream, timeout=5))
            if request:
                upstream.sendall(request)
            if decision == "lost":
                self._count("lost_replies")
                _pipe(client if self.mode == "tcp" else None, upstream, None, self._stopping)
                return
            self._count("forwarded")
            _pipe(client if self.mode == "tcp" else None, upstream, client, self._stopping)
        except OSError:
            self._count("io_errors")
        finally:
            with self._lock:
                for sock in (client, upstream):
                    if sock is not None:
                        self._sockets.discard(sock)
                self._workers.discard(threading.current_thread())
            for sock in (client, upstream):
                if sock is not None:
                    _close(sock)
            self._slots.release()


def _read_request(client: socket.socket) -> bytes | None:
    """One HTTP/1.1 request, re-headed with ``Connection: close``; None if the client left."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = client.recv(65536)
        if not chunk:
            return None
        buffer += chunk
        if len(buffer) > _MAX_HEAD:
            raise OSError("request head too large")
    head, _, body = buffer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    kept = [line for line in lines[1:] if not line.lower().startswith(_HOP_HEADERS)]
    length = 0
    chunked = False
    for line in kept:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
        elif name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    while (len(body) < length) if not chunked else not body.endswith(b"0\r\n\r\n"):
        chunk = client.recv(65536)
        if not chunk:
            return None
        body += chunk
    return b"\r\n".join([lines[0], *kept, b"Connection: close"]) + b"\r\n\r\n" + body


def _pipe(
    client: socket.socket | None,
    upstream: socket.socket,
    relay_back: socket.socket | None,
    stopping: threading.Event,
) -> None:
    """Copy client→upstream (tcp mode) and upstream→``relay_back`` until the upstream closes."""
    with selectors.DefaultSelector() as selector:
        selector.register(upstream, selectors.EVENT_READ)
        if client is not None:
            selector.register(client, selectors.EVENT_READ)
        deadline = time.monotonic() + upstream.gettimeout()  # type: ignore[operator]
        while time.monotonic() < deadline and not stopping.is_set():
            for key, _ in selector.select(timeout=0.1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                data = sock.recv(65536)
                if not data:
                    return
                deadline = time.monotonic() + upstream.gettimeout()  # type: ignore[operator]
                if sock is upstream:
                    if relay_back is not None:
                        relay_back.sendall(data)
                else:
                    upstream.sendall(data)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
