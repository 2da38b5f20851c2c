"""What counts as a loopback host: ``localhost`` or a loopback address (127.0.0.0/8, ``::1``).

The dashboard binds without authentication only there, and an LDAP target may be reached in
plain text only there."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback"]


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
