"""One call to the adapter, within a time budget: a signed HTTPS POST, or a command.

The budget covers the whole call (connect, TLS, send, every byte of the answer): a watchdog
shuts the socket down when it runs out, so a server that trickles its answer is cut off too.
A command runs in its own process group, killed whole when the budget runs out.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import subprocess
import threading
import urllib.parse
from dataclasses import dataclass

from rotation.errors import RotationError

__all__ = ["MAX_REPLY_BYTES", "Reply", "post", "run_command"]

#: An adapter's answer larger than this is refused (an answer holds one value at most).
MAX_REPLY_BYTES = 1 << 20
#: What a command inherits from the worker besides the policy's ``pass_env``.
BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")
#: A command exiting with this status (sysexits EX_TEMPFAIL) asks to be tried again.
EX_TEMPFAIL = 75


@dataclass(frozen=True)
class Reply:
    """The adapter's answer: ``ok`` (2xx / exit 0), a status for messages, the raw body."""

    ok: bool
    status: str
    body: bytes
    #: Whether trying again may help, by the transport's rules (the body may override it).
    retryable: bool


def _unreachable(what: str, exc: BaseException | str) -> RotationError:
    reason = exc if isinstance(exc, str) else type(exc).__name__
    return RotationError(f"The external adapter {what} ({reason}); retry later.", retryable=True)


def post(
    url: str, body: bytes, headers: dict[str, str], timeout: float, ca_file: str | None
) -> Reply:
    """POST ``body`` to ``url`` (HTTPS, certificate and host name verified)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise RotationError(f"The adapter URL must be https://, not {parts.scheme!r}.")
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise RotationError(
            f"Cannot load the adapter's ca_file {ca_file!r} ({type(exc).__name__}).",
            retryable=False,
        ) from None
    conn = http.client.HTTPSConnection(
        parts.hostname, parts.port or 443, timeout=timeout, context=context
    )
    expired = threading.Event()

    def cut_off() -> None:
        expired.set()
        sock = conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    watchdog = threading.Timer(timeout, cut_off)
    watchdog.daemon = True
    watchdog.start()
    target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    try:
        conn.request("POST", target, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read(MAX_REPLY_BYTES + 1)
        status = response.status
    except ssl.SSLCertVerificationError:
        raise RotationError(
            f"The external adapter at {parts.hostname} presented a certificate that does not "
            "verify: check the policy's ca_file and the host name.",
            retryable=False,
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set():
            raise _unreachable(f"did not answer within {timeout:g} s", "timed out") from None
        raise _unreachable(f"at {parts.hostname} is unreachable", exc) from None
    finally:
        watchdog.cancel()
        conn.close()
    if expired.is_set():
        raise _unreachable(f"did not answer within {timeout:g} s", "timed out")
    if len(data) > MAX_REPLY_BYTES:
        raise RotationError("The external adapter answered more than 1 MiB.", retryable=False)
    retryable = status in (408, 425, 429) or status >= 500
    return Reply(200 <= status < 300, f"HTTP {status}", data, retryable)


def run_command(argv: tuple[str, ...], body: bytes, env: dict[str, str], timeout: float) -> Reply:
    """Run ``argv`` with ``body`` on stdin; its stdout is the reply, exit 0 means success."""
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # may print values; never logged
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        raise RotationError(
            f"Cannot run the adapter command {argv[0]!r} ({type(exc).__name__}).",
            retryable=False,
        ) from None
    try:
        out, _ = proc.communicate(input=body, timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        raise _unreachable(f"command did not finish within {timeout:g} s", "killed") from None
    if len(out) > MAX_REPLY_BYTES:
        raise RotationError("The external adapter answered more than 1 MiB.", retryable=False)
    code = proc.returncode
    return Reply(code == 0, f"exit status {code}", out, code == EX_TEMPFAIL)
