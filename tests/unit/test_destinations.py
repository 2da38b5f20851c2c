"""The webhook address check is a pure function over IP addresses: no connection is opened."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from rotation.policy.destinations import parse_networks, refusal, refusals
from rotation.policy.restart import WebhookRestart

REFUSED = {
    "127.0.0.1": "loopback",
    "127.9.9.9": "loopback",
    "::1": "loopback",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "fd12:3456::1": "private",
    "fc00::1": "private",
    "169.254.1.1": "link-local",
    "fe80::1": "link-local",
    "169.254.169.254": "the cloud metadata address",
    "fd00:ec2::254": "the cloud metadata address",
    "0.0.0.0": "unspecified",
    "::": "unspecified",
    "224.0.0.1": "multicast",
    "ff02::1": "multicast",
    "100.64.0.1": "shared address space",
    "192.0.2.1": "",  # documentation
    "240.0.0.1": "",  # reserved
    "::ffff:127.0.0.1": "loopback",  # IPv4-mapped
    "::ffff:169.254.169.254": "the cloud metadata address",
    "64:ff9b::a9fe:a9fe": "the cloud metadata address",  # NAT64 of 169.254.169.254
    "2002:a00:1::": "private",  # 6to4 of 10.0.0.1
}


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything tries to open a socket or resolve a name."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the address check opened a connection or resolved a name")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize(("address", "kind"), sorted(REFUSED.items()))
def test_addresses_that_are_not_public_are_refused(address: str, kind: str) -> None:
    reason = refusal(ipaddress.ip_address(address))
    assert reason is not None and kind in reason


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


def test_an_allowed_network_lifts_the_refusal_for_its_addresses_only() -> None:
    allowed = parse_networks(["127.0.0.0/8", "10.20.0.0/16"])
    assert refusal(ipaddress.ip_address("127.0.0.1"), allowed) is None
    assert refusal(ipaddress.ip_address("10.20.3.4"), allowed) is None
    assert refusal(ipaddress.ip_address("::ffff:127.0.0.1"), allowed) is None
    assert refusal(ipaddress.ip_address("10.21.0.1"), allowed) == "private"
    assert refusal(ipaddress.ip_address("169.254.169.254"), allowed) is not None
    assert refusal(ipaddress.ip_address("::1"), allowed) == "loopback"


def test_every_address_a_name_resolves_to_is_judged() -> None:
    resolved = [ipaddress.ip_address(a) for a in ("93.184.216.34", "10.0.0.5", "8.8.8.8")]
    assert [(str(a), r) for a, r in refusals(resolved)] == [("10.0.0.5", "private")]


def test_a_bad_allow_networks_entry_is_named() -> None:
    with pytest.raises(ValueError, match=r"allow_networks: '127\.0\.0\.1/8' is not a network"):
        parse_networks(["127.0.0.1/8"])
    with pytest.raises(ValueError, match="allow_networks: 'localhost'"):
        WebhookRestart.model_validate(
            {"url": "https://h.example/x", "hmac_secret": "k", "allow_networks": ["localhost"]}
        )


def test_a_literal_private_url_is_refused_when_the_policy_is_loaded() -> None:
    with pytest.raises(ValueError, match=r"169\.254\.169\.254 is the cloud metadata address"):
        WebhookRestart.model_validate({"url": "http://169.254.169.254/latest", "hmac_secret": "k"})
    with pytest.raises(ValueError, match=r"allow_networks: \[127\.0\.0\.0/8\]"):
        WebhookRestart.model_validate({"url": "http://127.0.0.1:8080/x", "hmac_secret": "k"})
    spec = WebhookRestart.model_validate(
        {"url": "http://127.0.0.1:8080/x", "hmac_secret": "k", "allow_networks": ["127.0.0.0/8"]}
    )
    assert spec.allowed == (ipaddress.ip_network("127.0.0.0/8"),)
