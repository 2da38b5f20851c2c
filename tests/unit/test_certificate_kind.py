"""The ``certificate`` kind's checks without a network: what a TLS client would refuse, the
internal CA's certificates, and no key material in messages or reprs. Also the ``ldap`` kind's
refusal to send a password in clear text, and the ``aws-iam`` key's repr."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from rotation.errors import RotationError, TargetRejected
from rotation.rotators.aws_iam.iam import AccessKey
from rotation.rotators.certificate.bundle import Bundle, Names, not_after_of, verify_bundle
from rotation.rotators.certificate.issuers import InternalCa
from rotation.rotators.ldap.directory import Account, Directory
from tests.backends.certs import NAMES, InternalCaCerts, make_ca

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def ca() -> InternalCaCerts:
    return InternalCaCerts()


def bundle(ca: InternalCaCerts, **kw: object) -> Bundle:
    return Bundle.parse(ca.issue(**kw), "value")  # type: ignore[arg-type]


def test_an_issued_certificate_round_trips_and_verifies(ca: InternalCaCerts) -> None:
    value = ca.issue()
    parsed = Bundle.parse(value, "value")
    assert Bundle.parse(parsed.to_value(), "again").serial == parsed.serial
    assert not_after_of(value) == parsed.not_after
    verify_bundle(parsed, ca.anchors, where="x")
    cert = parsed.certificate
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert Names.of(cert).dns == NAMES.dns and Names.of(cert).ips == NAMES.ips
    assert "PRIVATE" not in repr(parsed)


@pytest.mark.parametrize("key_type", ["ec-p384", "rsa-2048", "ed25519"])
def test_each_key_type_verifies(ca: InternalCaCerts, key_type: str) -> None:
    issued = InternalCa(ca.ca, "ca").issue(NAMES, timedelta(days=1), key_type, NOW)
    verify_bundle(issued, ca.anchors, where=key_type)


def test_a_client_refuses_another_ca_a_missing_name_a_foreign_key_and_expiry(
    ca: InternalCaCerts,
) -> None:
    good = bundle(ca)
    with pytest.raises(TargetRejected, match="signature does not match"):
        verify_bundle(good, InternalCaCerts().anchors, where="x")
    with pytest.raises(TargetRejected, match="no matching subjectAltName"):
        verify_bundle(good, ca.anchors, names=Names("other.test", ("other.test",)), where="x")
    other = bundle(ca)
    swapped = Bundle(good.certificate, other.private_key, good.chain)
    with pytest.raises(TargetRejected, match="does not belong"):
        verify_bundle(swapped, ca.anchors, where="x")
    with pytest.raises(TargetRejected, match="refuse"):
        verify_bundle(good, ca.anchors, now=good.not_after + timedelta(days=1), where="x")


def test_the_internal_ca_never_issues_past_its_own_expiry() -> None:
    ca = InternalCa(make_ca(), "ca")
    issued = ca.issue(NAMES, timedelta(days=365 * 20), "ec-p256", NOW)
    assert issued.not_after == ca.certificate.not_valid_after_utc
    with pytest.raises(TargetRejected, match="expired"):
        ca.issue(NAMES, timedelta(days=1), "ec-p256", ca.certificate.not_valid_after_utc)


def test_bad_values_are_refused_without_their_content() -> None:
    with pytest.raises(RotationError, match="lacks private_key") as err:
        Bundle.parse({"certificate": "-----BEGIN CERTIFICATE-----\nsecret"}, "The value")
    assert "secret" not in str(err.value)
    with pytest.raises(RotationError, match="certificate is empty"):
        Bundle.parse({"certificate": "", "private_key": "hunter2"}, "The value")
    issued = InternalCaCerts().issue()
    with pytest.raises(RotationError, match="not an unencrypted PEM private key") as err:
        Bundle.parse({**issued, "private_key": "hunter2"}, "The value")
    assert "hunter2" not in str(err.value)
    assert not_after_of({"certificate": "garbage"}) is None
    with pytest.raises(RotationError, match="does not belong to the CA"):
        InternalCa({**make_ca(), "private_key": make_ca()["private_key"]}, "ca")


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("ldap://ldap.example.com", True),
        ("ldap://127.0.0.1:3389", False),
        ("ldap://localhost", False),
        ("ldaps://ldap.example.com", False),
    ],
)
def test_ldap_never_sends_a_password_in_clear_to_the_network(url: str, refused: bool) -> None:
    directory = Directory(start_tls=False, ca_file=None, allow_plaintext=False, timeout=1)
    if refused:
        with pytest.raises(TargetRejected, match="unencrypted"):
            directory._server(url)
        allowed = Directory(start_tls=True, ca_file=None, allow_plaintext=False, timeout=1)
        allowed._server(url)
    else:
        directory._server(url)


def test_credentials_keep_their_secret_out_of_repr() -> None:
    key = AccessKey.from_value({"access_key_id": "AKIA1", "secret_access_key": "s3cr3t"}, "v")
    account = Account.from_value(
        {"url": "ldaps://x", "bind_dn": "uid=a", "password": "pw-s3cr3t"}, "v"
    )
    assert "s3cr3t" not in repr(key) and "s3cr3t" not in repr(account)
    with pytest.raises(RotationError, match="neither ldap:// nor ldaps://"):
        Account.from_value({"url": "http://x", "bind_dn": "uid=a", "password": "p"}, "v")
