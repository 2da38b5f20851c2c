"""Start the real ``keyturn dashboard`` command on a free port, for the dashboard tests."""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KEYTURN = [sys.executable, "-c", "from rotation.cli import main; main()"]
_SERVING = re.compile(r"on (http://\S+/) \((.*)\)")


@dataclass
class Served:
    base: str
    process: subprocess.Popen[str]
    banner: str


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]
    body: str


def fetch(
    url: str,
    *,
    auth: tuple[str, str] | None = None,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """One real HTTP request; errors are answers too."""
    request = urllib.request.Request(url, method=method, headers=dict(headers or {}))
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return Answer(response.status, dict(response.headers), response.read().decode())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, dict(exc.headers), exc.read().decode())


@contextmanager
def dashboard(env: Mapping[str, str], *args: str, timeout: float = 30) -> Iterator[Served]:
    """``keyturn dashboard --port 0 ARGS`` until the block ends (SIGTERM, then wait)."""
    process = subprocess.Popen(
        [*KEYTURN, "dashboard", "--port", "0", *args],
        env={**os.environ, **env},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + timeout
        assert process.stderr is not None
        line = ""
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            found = _SERVING.search(line)
            if found:
                break
            if process.poll() is not None:
                raise AssertionError(
                    f"dashboard exited {process.returncode}: {line}{process.stderr.read()}"
                )
        else:
            raise AssertionError(f"dashboard did not start: {line}")
        yield Served(found.group(1), process, line)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
