"""The HTTPS front of the emulator: TLS, the bearer challenge, routing, fault injection."""

from __future__ import annotations

import json
import random
import socket
import ssl
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.backends.keyvault.certs import TLSFiles, make_tls_files
from tests.backends.keyvault.vault import ApiError, Vault

__all__ = ["CHALLENGE_RESOURCE", "KeyVaultEmulator", "RequestRecord"]

CHALLENGE_RESOURCE = "https://vault.azure.net"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
_CHALLENGE = (
    f'Bearer authorization="https://login.microsoftonline.com/{TENANT}", '
    f'resource="{CHALLENGE_RESOURCE}"'
)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the emulator saw it (never its body)."""

    method: str
    path: str
    status: int  # 0 when the connection was dropped
    authorized: bool  # carried an ``Authorization`` header
    api_version: str | None
    body_bytes: int


@dataclass(frozen=True)
class Faults:
    error_rate: float = 0.0
    status: int = 503
    latency: float = 0.0
    drop_rate: float = 0.0
    retry_after: int = 1
    methods: frozenset[str] | None = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    emulator: KeyVaultEmulator

    def finish_request(self, request: Any, client_address: Any) -> None:
        """TLS handshake in the connection's own thread, not in the accept loop."""
        try:
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms Nagle stalls
            tls = self.emulator.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (timeouts, tests) is not worth a traceback on stderr."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "KeyVaultEmulator/1.0"
    timeout = 30
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    do_PUT = do_PATCH = do_DELETE = do_POST = do_GET

    def _handle(self) -> None:
        emulator = self.server.emulator
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        authorization = self.headers.get("Authorization")
        fault = emulator._draw_fault(self.command)
        status, body, headers = 0, None, {}
        if fault == "drop":
            self.close_connection = True
            emulator._record(self.command, url.path, 0, authorization, query, len(raw))
            return
        if fault == "error":
            status, body = emulator._fault_answer()
            headers = {"Retry-After": str(emulator._faults.retry_after)} if status == 429 else {}
        else:
            status, body, headers = emulator._dispatch(
                self.command, url.path, query, raw, authorization
            )
        emulator._record(self.command, url.path, status, authorization, query, len(raw))
        payload = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if payload:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-ms-keyvault-service-version", "emulator")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if payload:
            self.wfile.write(payload)


class KeyVaultEmulator:
    """An HTTPS Key Vault (secrets API only) on 127.0.0.1, for tests.

    ``tokens`` are the bearer tokens it accepts. ``ca_bundle`` is the PEM file clients must
    trust. Start with :meth:`start`, stop with :meth:`stop` (or use it as a context manager).
    """

    def __init__(
        self,
        *,
        tokens: set[str] | frozenset[str] = frozenset({"test-token"}),
        tls_dir: Path,
        tls: TLSFiles | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.tokens = set(tokens)
        self.tls = tls or make_tls_files(tls_dir)
        self.ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ssl_context.load_cert_chain(self.tls.cert, self.tls.key)
        self._httpd = _Server((host, 0), _Handler, bind_and_activate=True)
        self._httpd.emulator = self
        self.port = self._httpd.server_address[1]
        self.url = f"https://{host}:{self.port}"
        self.vault = Vault(self.url)
        self.requests: deque[RequestRecord] = deque(maxlen=5000)
        self.stats: Counter[str] = Counter()
        self._faults = Faults()
        self._random = random.Random(0)
        self._fault_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def ca_bundle(self) -> str:
        return str(self.tls.ca)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> KeyVaultEmulator:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"keyvault-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> KeyVaultEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- knobs -------------------------------------------------------------------------------

    def faults(
        self,
        *,
        error_rate: float = 0.0,
        status: int = 503,
        latency: float = 0.0,
        drop_rate: float = 0.0,
        retry_after: int = 1,
        methods: tuple[str, ...] | None = None,
        seed: int = 0,
    ) -> None:
        """Inject faults into the next requests; ``faults()`` with no arguments turns them off.

        ``error_rate`` of requests answer ``status`` (503, or 429 with ``Retry-After``);
        ``drop_rate`` close the connection without answering; every request waits ``latency``
        seconds first. ``methods`` limits faults to those HTTP methods. Draws come from a
        ``random.Random(seed)``, so a single-threaded run sees the same faults every time.
        Faults hit before the request is processed: a faulted write changes nothing.
        """
        if status not in (429, 500, 502, 503, 504):
            raise ValueError(f"fault status must be 429 or 5xx, not {status}")
        with self._fault_lock:
            self._faults = Faults(
                error_rate,
                status,
                latency,
                drop_rate,
                retry_after,
                frozenset(m.upper() for m in methods) if methods else None,
            )
            self._random = random.Random(seed)

    def clear_log(self) -> None:
        self.requests.clear()
        self.stats.clear()

    # --- request handling ----------------------------------------------------------------------

    def _draw_fault(self, method: str) -> str | None:
        with self._fault_lock:
            faults = self._faults
            self.stats["requests"] += 1
            if faults.methods is not None and method not in faults.methods:
                return None
            draw = self._random.random()
        if faults.latency:
            time.sleep(faults.latency)
        if draw < faults.drop_rate:
            self.stats["dropped"] += 1
            return "drop"
        if draw < faults.drop_rate + faults.error_rate:
            self.stats["faulted"] += 1
            return "error"
        return None

    def _fault_answer(self) -> tuple[int, dict[str, Any]]:
        status = self._faults.status
        if status == 429:
            return status, {
                "error": {
                    "code": "Throttled",
                    "message": "Request was not processed because too many requests were "
                    "received. Reason: VaultRequestTypeLimitReached",
                }
            }
        return status, {
            "error": {
                "code": "ServiceUnavailable",
                "message": "The service is temporarily unavailable; retry later.",
            }
        }

    def _record(
        self,
        method: str,
        path: str,
        status: int,
        authorization: str | None,
        query: dict[str, str],
        body_bytes: int,
    ) -> None:
        self.requests.append(
            RequestRecord(
                method,
                path,
                status,
                authorization is not None,
                query.get("api-version"),
                body_bytes,
            )
        )

    def _dispatch(
        self, method: str, path: str, query: dict[str, str], raw: bytes, authorization: str | None
    ) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        if not query.get("api-version"):
            error = ApiError(400, "BadParameter", "The api-version query parameter is required.")
            return error.status, error.body(), {}
        if authorization is None or not authorization.startswith("Bearer "):
            error = ApiError(
                401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token."
            )
            return error.status, error.body(), {"WWW-Authenticate": _CHALLENGE}
        if authorization.removeprefix("Bearer ").strip() not in self.tokens:
            self.stats["refused_tokens"] += 1
            error = ApiError(401, "Unauthorized", "AKV10022: Invalid audience or token.")
            return error.status, error.body(), {"WWW-Authenticate": _CHALLENGE}
        try:
            body: dict[str, Any] = json.loads(raw) if raw else {}
            if not isinstance(body, dict):
                raise ApiError(400, "BadParameter", "The request body must be a JSON object.")
            status, answer = self._route(method, path, query, body)
            return status, answer, {}
        except json.JSONDecodeError:
            error = ApiError(400, "BadParameter", "The request body is not valid JSON.")
        except ApiError as exc:
            error = exc
        return error.status, error.body(), {}

    def _route(
        self, method: str, path: str, query: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, dict[str, Any] | None]:
        vault = self.vault
        parts = path.split("/")[1:]  # "/secrets/a/" -> ["secrets", "a", ""]
        kind, rest = (parts[0], parts[1:]) if parts else ("", [])
        skip = int(query.get("$skiptoken") or 0)
        maxresults = int(query["maxresults"]) if query.get("maxresults") else None
        if kind == "secrets":
            if rest in ([], [""]) and method == "GET":
                return 200, self._listing("secrets", *vault.list_secrets(skip, maxresults), query)
            if len(rest) == 1 and method == "PUT":
                return 200, vault.set_secret(rest[0], body)
            if len(rest) == 1 and method == "DELETE":
                return 200, vault.delete_secret(rest[0])
            if len(rest) == 1 and method == "GET":
                return 200, vault.get_secret(rest[0], "")
            if len(rest) == 2 and rest[1] == "versions" and method == "GET":
                items, nxt = vault.list_versions(rest[0], skip, maxresults)
                return 200, self._listing(f"secrets/{rest[0]}/versions", items, nxt, query)
            if len(rest) == 2 and method in ("GET", "PATCH"):
                name, version = rest
                if version and not _is_version(version):
                    raise ApiError(
                        404,
                        "SecretNotFound",
                        f"A secret with (name/id) {name}/{version} was not found in this "
                        "key vault.",
                    )
                if method == "GET":
                    return 200, vault.get_secret(name, version)
                return 200, vault.update_secret(name, version, body)
        elif kind == "deletedsecrets":
            if rest in ([], [""]) and method == "GET":
                return 200, self._listing(
                    "deletedsecrets", *vault.list_deleted(skip, maxresults), query
                )
            if len(rest) == 1 and method == "GET":
                return 200, vault.get_deleted(rest[0])
            if len(rest) == 1 and method == "DELETE":
                vault.purge(rest[0])
                return 204, None
            if len(rest) == 2 and rest[1] == "recover" and method == "POST":
                return 200, vault.recover(rest[0])
        raise ApiError(
            405 if kind in ("secrets", "deletedsecrets") else 404,
            "BadRequest",
            f"No route for {method} {path}.",
        )

    def _listing(
        self, collection: str, items: list[dict[str, Any]], nxt: int | None, query: dict[str, str]
    ) -> dict[str, Any]:
        next_link = None
        if nxt is not None:
            next_link = (
                f"{self.url}/{collection}?api-version={query['api-version']}&$skiptoken={nxt}"
            )
            if query.get("maxresults"):
                next_link += f"&maxresults={query['maxresults']}"
        return {"value": items, "nextLink": next_link}


def _is_version(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)
