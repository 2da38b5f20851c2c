"""The signed request envelope: canonical form, every field covered by the signature, expiry,
wrong key, unknown principal, a request reused for another action, and the key files."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rotation.access.requests import (
    FIELDS,
    Keyring,
    canonical,
    generate_key_pair,
    load_private_key,
    sign,
    verify,
)
from rotation.config import RequestSettings
from rotation.errors import ConfigurationError, RequestRefused

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
TTL = timedelta(minutes=5)
ARGS = {"secret": "svc/db", "retry_after_seconds": 3600.0}


@pytest.fixture
def alice() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def keyring(alice: Ed25519PrivateKey) -> Keyring:
    return Keyring({"alice": alice.public_key(), "bob": Ed25519PrivateKey.generate().public_key()})


def envelope(key: Ed25519PrivateKey, actor: str = "alice", **over: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"action": "rollback", "args": ARGS, "actor": actor, "now": NOW}
    params.update(over)
    return sign(key, ttl=TTL, **params)


def check(signed: object, keyring: Keyring, at: datetime = NOW + timedelta(seconds=1)) -> str:
    return verify(signed, keyring, action="rollback", args=ARGS, now=at, max_ttl=TTL).actor


def refused(signed: object, keyring: Keyring, at: datetime = NOW + timedelta(seconds=1)) -> str:
    with pytest.raises(RequestRefused) as caught:
        check(signed, keyring, at)
    assert "nothing was done" in caught.value.message
    return caught.value.reason


def test_a_signed_request_verifies_as_its_signer(
    alice: Ed25519PrivateKey, keyring: Keyring
) -> None:
    assert check(envelope(alice), keyring) == "alice"


def test_canonical_form_is_sorted_compact_utf8_behind_a_domain_tag(
    alice: Ed25519PrivateKey,
) -> None:
    signed = envelope(alice, args={"secret": "prod/é", "b": 1})
    data = canonical(signed)
    assert data.startswith(b"keyturn-request-v1\n")
    body = json.loads(data.split(b"\n", 1)[1])
    assert list(body) == sorted(FIELDS) and "signature" not in body
    assert "prod/é".encode() in data and b", " not in data and b": " not in data
    # the order keys arrive in does not matter
    assert canonical(dict(reversed(list(signed.items())))) == data


@pytest.mark.parametrize("name", [*FIELDS, "signature"])
def test_tampering_with_any_field_is_refused(
    name: str, alice: Ed25519PrivateKey, keyring: Keyring
) -> None:
    signed = envelope(alice)
    changed = {
        "v": 2,
        "action": "resolve",
        "args": {**ARGS, "secret": "svc/other"},
        "actor": "bob",
        "issued_at": "2026-05-01T11:59:00.000000Z",
        "expires_at": "2026-05-01T12:04:00.000000Z",
        "nonce": "0" * 32,
        "signature": envelope(alice)["signature"],  # a valid signature of another request
    }
    signed[name] = changed[name]
    reason = refused(signed, keyring)
    assert reason != ""


def test_forged_actor_signed_with_someone_elses_key_is_refused(keyring: Keyring) -> None:
    mallory = Ed25519PrivateKey.generate()
    assert refused(envelope(mallory, actor="alice"), keyring).startswith("bad signature")


def test_unknown_principal_is_refused(keyring: Keyring) -> None:
    carol = Ed25519PrivateKey.generate()
    assert "no key for this principal" in refused(envelope(carol, actor="carol"), keyring)


def test_expired_and_too_long_lived_requests_are_refused(
    alice: Ed25519PrivateKey, keyring: Keyring
) -> None:
    signed = envelope(alice)
    assert check(signed, keyring, NOW + TTL - timedelta(seconds=1)) == "alice"
    assert refused(signed, keyring, NOW + TTL).startswith("expired at")
    long_lived = sign(alice, action="rollback", args=ARGS, actor="alice", now=NOW, ttl=TTL * 10)
    assert "longer than the workers allow" in refused(long_lived, keyring)
    future = envelope(alice, now=NOW + timedelta(minutes=2))
    assert "issued in the future" in refused(future, keyring)


def test_a_request_signed_for_another_action_or_arguments_is_refused(
    alice: Ed25519PrivateKey, keyring: Keyring
) -> None:
    other = envelope(alice, action="resolve")
    assert "another action or arguments" in refused(other, keyring)
    moved = envelope(alice, args={**ARGS, "secret": "svc/other"})
    assert "another action or arguments" in refused(moved, keyring)


def test_not_an_envelope_is_refused_naming_the_claimed_actor(keyring: Keyring) -> None:
    for junk in (None, "x", {"actor": "alice"}, {**dict.fromkeys(FIELDS), "signature": "!"}):
        with pytest.raises(RequestRefused) as caught:
            check(junk, keyring)
        assert caught.value.claimed in ("alice", "unknown")
        assert "svc/db" not in caught.value.message  # never the arguments


def test_key_files_generate_load_and_refuse_loose_modes(tmp_path: Path) -> None:
    private, public = generate_key_pair("alice", tmp_path / "keys")
    assert (private.name, public.name) == ("alice.key", "alice.pub")
    assert private.stat().st_mode & 0o777 == 0o600
    key = load_private_key(private)
    keyring = Keyring.load(tmp_path / "keys")
    assert set(keyring.keys) == {"alice"}
    assert check(envelope(key), keyring) == "alice"
    with pytest.raises(ConfigurationError, match="exists; not overwriting"):
        generate_key_pair("alice", tmp_path / "keys")
    os.chmod(private, 0o644)
    with pytest.raises(ConfigurationError, match="may be read by others"):
        load_private_key(private)
    with pytest.raises(ConfigurationError, match="not a principal name"):
        generate_key_pair("../x", tmp_path)
    (tmp_path / "keys" / "broken.pub").write_text("not a key")
    with pytest.raises(ConfigurationError, match=r"broken\.pub: not a PEM public key"):
        Keyring.load(tmp_path / "keys")
    with pytest.raises(ConfigurationError, match="not a directory"):
        Keyring.load(tmp_path / "missing")


def test_request_settings_parse_and_validate() -> None:
    default = RequestSettings.from_env({})
    assert (default.api_principal, default.ttl, default.operator_keys) == ("api", TTL, None)
    given = RequestSettings.from_env(
        {"KEYTURN_API_PRINCIPAL": "flower", "KEYTURN_REQUEST_TTL_SECONDS": "60"}
    )
    assert (given.api_principal, given.ttl) == ("flower", timedelta(seconds=60))
    with pytest.raises(ConfigurationError, match="KEYTURN_REQUEST_TTL_SECONDS"):
        RequestSettings.from_env({"KEYTURN_REQUEST_TTL_SECONDS": "1"})


def test_keyturn_keys_generate_writes_a_pair_and_never_overwrites(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from rotation.cli import main

    done = CliRunner().invoke(main, ["keys", "generate", "alice", "--dir", str(tmp_path)])
    assert done.exit_code == 0, done.output
    assert f"KEYTURN_OPERATOR_KEY={tmp_path / 'alice.key'}" in done.output
    assert "KEYTURN_OPERATOR_KEYS" in done.output
    assert Keyring.load(tmp_path).key_of("alice") is not None
    again = CliRunner().invoke(main, ["keys", "generate", "alice", "--dir", str(tmp_path)])
    assert again.exit_code == 2 and "not overwriting" in again.output
