"""``webhook``: POST the promotion to a URL, signed with HMAC-SHA256 (``X-Keyturn-Signature``).

A rollback POSTs ``{"event": "secret.rolled_back", "version": <current again>,
"rollback_of": <abandoned>, ...}`` to the same URL.

Where the call may go: the host name is resolved once and every address it resolves to must
pass the address check (``rotation/policy/destinations.py``: no loopback, private, link-local or
metadata address unless the policy's ``allow_networks`` holds it); the connection then goes to a
checked address, with the URL's host in the Host header and, for https, as the TLS server name
the certificate is verified against. Redirects are not followed: a 3xx answer is an error.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import socket
import ssl
import urllib.parse
from collections.abc import Sequence

from rotation.errors import RotationError
from rotation.policy.destinations import IPAddress, IPNetwork, refusals
from rotation.policy.restart import RestartStrategy, WebhookRestart
from rotation.run.restart import Progress, WaveOutcome
from rotation.run.step import StepInput

__all__ = ["call_webhook", "checked_addresses"]


def call_webhook(step: StepInput, spec: RestartStrategy, progress: Progress) -> WaveOutcome:
    """One signed POST; any answer but 2xx, or none, is retried (the step's attempts); a
    refused address or a redirect is not."""
    assert isinstance(spec, WebhookRestart)
    key = step.services.read_secret(spec.hmac_secret)
    if not isinstance(key, str):
        raise RotationError(
            f"the HMAC key secret {spec.hmac_secret} must be a string", retryable=False
        )
    move = step.announced()
    payload: dict[str, object] = {
        "event": f"secret.{move.event}",
        "secret": step.secret,
        "version": move.version,
        "run_id": step.run_id,
        "policy": step.policy.name,
    }
    if move.rollback_of is not None:
        payload["rollback_of"] = move.rollback_of
    body = json.dumps(payload, sort_keys=True).encode()
    signature = hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-Keyturn-Signature": f"sha256={signature}",
        "User-Agent": "keyturn",
    }
    step.guard.check()
    timeout = step.context.time_left(spec.timeout.total_seconds())
    status, location = _post(spec, body, headers, timeout)
    if 300 <= status < 400:
        raise RotationError(
            f"restart webhook answered HTTP {status}, a redirect"
            + (f" to {location[:200]}" if location else "")
            + ": redirects are not followed; set the policy's url to the final address",
            retryable=False,
        )
    if not 200 <= status < 300:
        raise RotationError(f"restart webhook answered HTTP {status}", retryable=True)
    return WaveOutcome(note=f"webhook answered HTTP {status}")


def checked_addresses(
    host: str, port: int, allowed: Sequence[IPNetwork], timeout: float
) -> list[IPAddress]:
    """Every address ``host`` resolves to, if each passes the address check (else an error
    naming the first refused one): a name that resolves to one public and one private address
    is refused, whichever a later lookup would give."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise RotationError(
            f"restart webhook host {host} does not resolve ({type(exc).__name__})",
            retryable=True,
        ) from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    refused = refusals(addresses, allowed)
    if refused:
        address, reason = refused[0]
        raise RotationError(
            f"restart webhook host {host} resolves to {address}, {reason}: refused; a policy "
            "may allow it explicitly with the webhook's allow_networks (e.g. "
            f"allow_networks: [{ipaddress.ip_network(address)}])",
            retryable=False,
        )
    return addresses


class _Pinned:
    """Makes an http.client connection connect to a checked address, not to its host name."""

    def __init__(self, addresses: Sequence[IPAddress]) -> None:
        self.addresses = addresses

    def __call__(
        self,
        address: tuple[str, int],
        timeout: float | None = None,
        source_address: tuple[str, int] | None = None,
    ) -> socket.socket:
        port = address[1]
        last: OSError | None = None
        for ip in self.addresses:
            try:
                return socket.create_connection((str(ip), port), timeout, source_address)
            except OSError as exc:
                last = exc
        raise last or OSError("no address to connect to")


def _post(
    spec: WebhookRestart, body: bytes, headers: dict[str, str], timeout: float
) -> tuple[int, str | None]:
    """POST to a checked address of the URL's host: (status, Location header)."""
    parts = urllib.parse.urlsplit(spec.url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    addresses = checked_addresses(host, port, spec.allowed, timeout)
    conn: http.client.HTTPConnection
    if https:
        try:
            context = ssl.create_default_context(cafile=spec.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise RotationError(
                f"Cannot load the webhook's ca_file {spec.ca_file!r} ({type(exc).__name__}).",
                retryable=False,
            ) from None
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    conn._create_connection = _Pinned(addresses)  # type: ignore[attr-defined]
    target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    try:
        conn.request("POST", target, body=body, headers=headers)
        response = conn.getresponse()
        response.read(64 * 1024)
        return response.status, response.getheader("Location")
    except ssl.SSLCertVerificationError as exc:
        raise RotationError(
            f"restart webhook at {host} presented a certificate that does not verify "
            f"({exc.verify_message}): check the host name and the policy's ca_file",
            retryable=False,
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        raise RotationError(
            f"restart webhook unreachable ({type(exc).__name__})", retryable=True
        ) from None
    finally:
        conn.close()
