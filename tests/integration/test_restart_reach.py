"""What restart hooks may reach: webhooks only public addresses unless the policy allows a
network, no redirects, TLS verified; commands as an unprivileged user with ``run_as``.

Through the engine with a real Postgres ledger, as tests/integration/test_restart.py does.
Every server here listens on 127.0.0.1; nothing connects elsewhere.
"""

from __future__ import annotations

import os
import pwd
import shutil
import ssl
import tempfile
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from rotation.errors import RotationError
from rotation.policy.restart import WebhookRestart
from rotation.providers.memory import MemoryProvider
from rotation.run.restart.webhook import checked_addresses
from tests.adapters.reference_adapter import make_certificates
from tests.integration.test_engine import drive
from tests.integration.test_restart import REDIS, policy, run_state, start_run

LOCALHOST = "allow_networks: [127.0.0.0/8, '::1/128']"


@pytest.fixture
def secret() -> str:
    return f"svc_{uuid.uuid4().hex[:8]}/api_key"


@pytest.fixture
def backend(secret: str) -> MemoryProvider:
    provider = MemoryProvider()
    provider.write(secret, "initial")
    provider.write("hooks/key", "hmac-key-for-tests")
    return provider


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYTURN_REDIS_URL", REDIS)


class Hook(BaseHTTPRequestHandler):
    """Counts requests; answers ``status`` with ``location`` (a redirect) when set."""

    status: ClassVar[int] = 200
    location: ClassVar[str | None] = None
    received: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).received.append(self.headers["Host"])
        self.send_response(type(self).status)
        if type(self).location:
            self.send_header("Location", type(self).location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST  # a client following a redirect may switch to GET: counted too

    def log_message(self, *args: object) -> None:
        pass


def serve(
    status: int = 200, location: str | None = None, tls: ssl.SSLContext | None = None
) -> tuple[int, type[Hook], ThreadingHTTPServer]:
    handler = type("H", (Hook,), {"status": status, "location": location, "received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1], handler, server


@pytest.fixture
def servers() -> Iterator[list[ThreadingHTTPServer]]:
    started: list[ThreadingHTTPServer] = []
    yield started
    for server in started:
        server.shutdown()
        server.server_close()


def run_webhook(ledger_url, backend, tmp_path: Path, secret: str, spec: str):
    body = policy(secret, f"{{strategy: webhook, hmac_secret: hooks/key, {spec}}}")
    runtime, engine, dispatcher, clock, enqueue = start_run(ledger_url, backend, tmp_path, body)
    ((run_id, state),) = enqueue
    drive(engine, run_id, state, clock, dispatcher)
    return run_state(runtime, run_id)


def test_a_loopback_webhook_is_refused_without_the_allowance(
    ledger_url, backend, secret, tmp_path, servers
) -> None:
    port, handler, server = serve()
    servers.append(server)
    # a host name, so the check happens when the call is made, on what the name resolves to
    run = run_webhook(ledger_url, backend, tmp_path, secret, f'url: "http://localhost:{port}/h"')
    assert run.state != "succeeded"
    assert "loopback: refused" in (run.last_error or "")
    assert "allow_networks" in (run.last_error or "")
    assert handler.received == []  # not even the rollback's call got through
    assert backend.read(secret).value == "initial"


def test_a_loopback_webhook_is_reached_with_the_allowance(
    ledger_url, backend, secret, tmp_path, servers
) -> None:
    port, handler, server = serve()
    servers.append(server)
    spec = f'url: "http://localhost:{port}/h", {LOCALHOST}'
    run = run_webhook(ledger_url, backend, tmp_path, secret, spec)
    assert run.state == "succeeded"
    assert handler.received == [f"localhost:{port}"]  # the URL's host, though the IP was dialled


def test_a_redirect_is_not_followed(ledger_url, backend, secret, tmp_path, servers) -> None:
    second_port, second, server = serve()
    servers.append(server)
    first_port, first, server = serve(302, f"http://127.0.0.1:{second_port}/elsewhere")
    servers.append(server)
    spec = f'url: "http://127.0.0.1:{first_port}/h", {LOCALHOST}'
    run = run_webhook(ledger_url, backend, tmp_path, secret, spec)
    assert run.state != "succeeded"
    assert "HTTP 302, a redirect" in (run.last_error or "")
    assert "redirects are not followed" in (run.last_error or "")
    assert len(first.received) >= 1
    assert second.received == []


def test_https_is_verified_against_the_policy_ca(
    ledger_url, backend, secret, tmp_path, servers
) -> None:
    ca, cert, key = make_certificates(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    port, handler, server = serve(tls=tls)
    servers.append(server)
    url = f'url: "https://localhost:{port}/h", {LOCALHOST}'
    untrusted = run_webhook(ledger_url, backend, tmp_path / "a", secret, url)
    assert untrusted.state != "succeeded"
    assert "certificate that does not verify" in (untrusted.last_error or "")
    assert handler.received == []
    other = f"svc_{uuid.uuid4().hex[:8]}/api_key"
    backend.write(other, "initial")
    trusted = run_webhook(ledger_url, backend, tmp_path / "b", other, f"{url}, ca_file: '{ca}'")
    assert trusted.state == "succeeded"
    assert handler.received == [f"localhost:{port}"]


# --- commands -----------------------------------------------------------------------------


@pytest.fixture
def drop() -> Iterator[Path]:
    """A directory every user may write to (the command as ``nobody`` reports through it)."""
    path = Path(tempfile.mkdtemp(prefix="keyturn-run-as-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users (run_as) needs a root worker")
@pytest.mark.parametrize("run_as", [None, "nobody"])
def test_run_as_keeps_the_worker_environment_out_of_reach(
    ledger_url, backend, secret, tmp_path, drop, run_as
) -> None:
    # what the worker (this process) was started with: what /proc/<pid>/environ shows
    worker_env = Path(f"/proc/{os.getpid()}/environ").read_bytes().replace(b"\0", b"\n")
    assert worker_env.strip()
    script = (
        f"id -u > {drop}/uid; "
        f"if tr '\\\\0' '\\\\n' > {drop}/environ 2> {drop}/error < /proc/$PPID/environ; "
        f"then echo read > {drop}/outcome; else echo refused > {drop}/outcome; fi"
    )
    extra = f", run_as: {run_as}" if run_as else ""
    restart = f'{{strategy: command, commands: [[sh, -c, "{script}"]]{extra}}}'
    runtime, engine, dispatcher, clock, enqueue = start_run(
        ledger_url, backend, tmp_path, policy(secret, restart)
    )
    ((run_id, state),) = enqueue
    drive(engine, run_id, state, clock, dispatcher)
    assert run_state(runtime, run_id).state == "succeeded"
    outcome = (drop / "outcome").read_text().strip()
    if run_as is None:  # the worker's own user reads the worker's environment: the leak
        assert outcome == "read"
        assert (drop / "environ").read_bytes() == worker_env
    else:
        assert (drop / "uid").read_text().strip() == str(pwd.getpwnam(run_as).pw_uid)
        assert outcome == "refused"
        assert "Permission denied" in (drop / "error").read_text()
        assert (drop / "environ").read_bytes() == b""


def test_an_unknown_run_as_user_is_refused_at_load(tmp_path) -> None:
    from rotation.policy import load_policies

    schedules = tmp_path / "schedules"
    schedules.mkdir()
    restart = "{strategy: command, commands: [[/bin/true]], run_as: no-such-user-kt}"
    (schedules / "p.yaml").write_text(policy("svc/x", restart))
    loaded = load_policies(schedules)
    assert not loaded.policies
    assert "there is no user 'no-such-user-kt' on this machine" in str(loaded.errors[0])


@pytest.mark.parametrize("host", ["localhost", "127.1", "2130706433", "0x7f.0.0.1"])
def test_names_and_numeric_spellings_of_loopback_are_refused_when_resolved(host: str) -> None:
    # resolved here (the numeric forms never reach a DNS server), not caught by the load check
    WebhookRestart.model_validate({"url": f"http://{host}:9/h", "hmac_secret": "k"})
    with pytest.raises(RotationError, match="loopback: refused") as refused:
        checked_addresses(host, 9, (), timeout=5)
    assert not refused.value.retryable
