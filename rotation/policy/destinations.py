"""Where a restart webhook may connect: the address check, a pure function over IP addresses.

A webhook's host name may resolve to anything, so every address it resolves to is checked, and
the call then goes to a checked address (no second lookup). Addresses that are not publicly
routable are refused unless the policy lists a network that holds them in ``allow_networks``:
loopback, private (RFC 1918, ULA ``fc00::/7``), link-local (``169.254.0.0/16``, ``fe80::/10``,
with the cloud metadata addresses ``169.254.169.254`` and ``fd00:ec2::254``), shared/CGNAT
(``100.64.0.0/10``), unspecified, multicast, reserved and documentation ranges. An IPv6 address
that carries an IPv4 one (mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4, Teredo) is
judged by the IPv4 address it reaches too.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

__all__ = ["IPAddress", "IPNetwork", "parse_networks", "refusal", "refusals"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_METADATA = (ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SHARED = ipaddress.ip_network("100.64.0.0/10")


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """``allow_networks`` entries as networks; a ValueError names a bad one."""
    networks: list[IPNetwork] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=True))
        except ValueError as exc:
            raise ValueError(
                f"allow_networks: {value[:60]!r} is not a network in CIDR form "
                f"(e.g. 127.0.0.0/8 or fd00::/8): {exc}"
            ) from None
    return tuple(networks)


def _kind(address: IPAddress) -> str | None:
    """Why ``address`` is not a public destination (None: it is one)."""
    if address in _METADATA:
        return "the cloud metadata address"
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return "shared address space (CGNAT, 100.64.0.0/10)"
    if address.is_private:
        return "private"
    if address.is_reserved or not address.is_global:
        return "reserved, not publicly routable"
    return None


def _embedded(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address reaches (mapped, NAT64, 6to4, Teredo)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    return found


def refusal(address: IPAddress, allowed: Sequence[IPNetwork] = ()) -> str | None:
    """Why a webhook may not connect to ``address`` (None: it may). ``allowed`` networks
    (the policy's ``allow_networks``) lift the refusal for the addresses they hold."""
    if any(address.version == net.version and address in net for net in allowed):
        return None
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    candidates = [mapped] if mapped is not None else [*_embedded(address), address]
    for candidate in candidates:
        if any(candidate.version == net.version and candidate in net for net in allowed):
            continue
        kind = _kind(candidate)
        if kind is not None:
            return kind if candidate == address else f"{kind} ({candidate}, carried in {address})"
    return None


def refusals(
    addresses: Iterable[IPAddress], allowed: Sequence[IPNetwork] = ()
) -> list[tuple[IPAddress, str]]:
    """Every refused address of ``addresses`` with its reason (empty: all may be reached)."""
    found: list[tuple[IPAddress, str]] = []
    for address in addresses:
        reason = refusal(address, allowed)
        if reason is not None:
            found.append((address, reason))
    return found
