"""Certificates for the ``certificate`` kind's tests: a throwaway internal CA, first certificates
from it or from the OpenBao PKI fixture, and ``accepts(value)``: would a TLS client trusting the
CA take this certificate and key (chain, names, validity, the key belongs to it, and, for
OpenBao, not on the mount's CRL)?

- :func:`make_ca` -> ``{"certificate", "private_key"}`` of a new root CA (EC P-256).
- :class:`InternalCaCerts` (``ca`` value, ``issue(names, lifetime)``, ``accepts(value)``).
- :class:`OpenBaoCerts` (over :class:`~tests.backends.openbao_pki.OpenBaoPki`: ``issue``,
  ``accepts`` with the CRL, ``env`` for workers).
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rotation.errors import TargetRejected
from rotation.rotators.certificate.bundle import Bundle, Names, verify_bundle
from rotation.rotators.certificate.issuers import InternalCa
from rotation.values import SecretValue
from tests.backends.openbao_pki import OpenBaoPki

__all__ = ["InternalCaCerts", "OpenBaoCerts", "make_ca", "self_signed"]

NAMES = Names("app.keyturn.test", ("app.keyturn.test", "localhost"), ("127.0.0.1",))


def _pem_key(key: Any) -> str:
    return str(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
    )


def make_ca(name: str = "Keyturn Test Internal CA") -> dict[str, str]:
    """A new root CA as the ``ca_secret`` value."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return {
        "certificate": cert.public_bytes(serialization.Encoding.PEM).decode(),
        "private_key": _pem_key(key),
    }


def self_signed(names: Names = NAMES) -> dict[str, object]:
    """A certificate nobody's CA signed (a forged renewal), as a secret value."""
    ca = InternalCa(make_ca("Forged"), "forged")
    return ca.issue(names, timedelta(days=30), "ec-p256", datetime.now(UTC)).to_value()


def _accepts(value: SecretValue, anchors: list[x509.Certificate]) -> bool:
    try:
        verify_bundle(Bundle.parse(value, "value"), anchors, where="test")
    except TargetRejected:
        return False
    return True


@dataclass
class InternalCaCerts:
    """A throwaway internal CA (its value goes into the backend as the ``ca_secret``)."""

    ca: dict[str, str] = field(default_factory=make_ca)

    @property
    def anchors(self) -> list[x509.Certificate]:
        return InternalCa(self.ca, "ca").anchors

    def issue(
        self, names: Names = NAMES, lifetime: timedelta = timedelta(days=30)
    ) -> dict[str, object]:
        bundle = InternalCa(self.ca, "ca").issue(names, lifetime, "ec-p256", datetime.now(UTC))
        return bundle.to_value()

    def accepts(self, value: SecretValue) -> bool:
        return _accepts(value, self.anchors)


@dataclass
class OpenBaoCerts:
    """The OpenBao PKI fixture as a certificate issuer and a CRL-checking client."""

    pki: OpenBaoPki

    @property
    def env(self) -> dict[str, str]:
        """What a worker needs to reach the PKI mount."""
        return {"VAULT_ADDR": self.pki.address, "VAULT_TOKEN": self.pki.token}

    @property
    def anchors(self) -> list[x509.Certificate]:
        return [x509.load_pem_x509_certificate(self.pki.ca_pem.encode())]

    def issue(self, common_name: str = "app.keyturn.test", ttl: str = "24h") -> dict[str, object]:
        client = self.pki.client()
        try:
            data = client.secrets.pki.generate_certificate(
                self.pki.role,
                common_name,
                extra_params={"ttl": ttl, "alt_names": "localhost", "ip_sans": "127.0.0.1",
                              "private_key_format": "pkcs8"},
                mount_point=self.pki.mount,
            )["data"]  # fmt: skip
        finally:
            client.adapter.close()
        raw = {
            "certificate": data["certificate"],
            "private_key": data["private_key"],
            "chain": "".join(c + "\n" for c in data.get("ca_chain") or [data["issuing_ca"]]),
        }
        return Bundle.parse(raw, "issued").to_value()  # PEM with its final newlines

    def crl(self) -> x509.CertificateRevocationList:
        url = f"{self.pki.address}/v1/{self.pki.mount}/crl/pem"
        with urllib.request.urlopen(url, timeout=10) as answer:
            return x509.load_pem_x509_crl(answer.read())

    def accepts(self, value: SecretValue) -> bool:
        if not _accepts(value, self.anchors):
            return False
        serial = Bundle.parse(value, "value").certificate.serial_number
        return self.crl().get_revoked_certificate_by_serial_number(serial) is None
