"""A certificate secret's value, ``{"certificate", "private_key", "chain"}`` (PEM), and what a TLS
client would check of it: the key matches the certificate, the chain leads to a trusted CA, the
names and the validity period (``cryptography``'s X.509 path validation, the rules of the Web
PKI). Nothing here talks to the network."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import NameOID

from rotation.errors import RotationError, TargetRejected
from rotation.values import SecretValue

__all__ = [
    "Bundle",
    "Names",
    "load_certificates",
    "load_private_key",
    "not_after_of",
    "pem",
    "verify_bundle",
]

_FIELDS = ("certificate", "private_key")
_CHALLENGE = b"keyturn: does this key belong to this certificate?"


@dataclass(frozen=True)
class Names:
    """The names a certificate is for: its common name, DNS and IP subject alternative names."""

    common_name: str | None
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()

    @classmethod
    def of(cls, cert: x509.Certificate) -> Names:
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return cls(str(cn[0].value) if cn else None)
        return cls(
            str(cn[0].value) if cn else None,
            tuple(san.get_values_for_type(x509.DNSName)),
            tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress)),
        )

    @property
    def first(self) -> str | None:
        """The name a client would connect to: the first DNS name, else the first IP."""
        if self.dns:
            return self.dns[0]
        if self.ips:
            return self.ips[0]
        return self.common_name

    def all_dns(self) -> tuple[str, ...]:
        """DNS names, the common name first when it is one (a certificate lists it as a SAN)."""
        names = list(self.dns)
        if self.common_name and not _is_ip(self.common_name) and self.common_name not in names:
            names.insert(0, self.common_name)
        return tuple(names)


@dataclass(frozen=True)
class Bundle:
    """A parsed certificate value; the key is kept out of ``repr``."""

    certificate: x509.Certificate
    private_key: PrivateKeyTypes = field(repr=False)
    chain: tuple[x509.Certificate, ...] = ()

    @classmethod
    def parse(cls, value: SecretValue, what: str) -> Bundle:
        """``value`` as a bundle; ``what`` names it in errors (never the value itself)."""
        if not isinstance(value, Mapping):
            raise RotationError(
                f"{what} must be a JSON object with certificate, private_key and chain (PEM).",
                retryable=False,
            )
        missing = [name for name in _FIELDS if not isinstance(value.get(name), str)]
        if missing:
            raise RotationError(f"{what} lacks {', '.join(missing)} (PEM).", retryable=False)
        certificates = load_certificates(str(value["certificate"]), f"{what}'s certificate")
        if not certificates:
            raise RotationError(f"{what}'s certificate is empty.", retryable=False)
        chain = value.get("chain") or ""
        if isinstance(chain, list):
            chain = "".join(str(c) for c in chain)
        return cls(
            certificates[0],
            load_private_key(str(value["private_key"]), f"{what}'s private_key"),
            tuple(certificates[1:]) + tuple(load_certificates(str(chain), f"{what}'s chain")),
        )

    @property
    def serial(self) -> str:
        """The serial number as OpenBao and Vault spell it (``1a:2b:...``)."""
        return serial_text(self.certificate.serial_number)

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    def to_value(self, carried: Mapping[str, object] | None = None) -> dict[str, object]:
        """The secret's JSON value (other fields of ``carried`` are kept)."""
        value = dict(carried or {})
        value["certificate"] = pem(self.certificate)
        value["private_key"] = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        value["chain"] = "".join(pem(c) for c in self.chain)
        return value


def serial_text(number: int) -> str:
    raw = f"{number:x}"
    raw = raw if len(raw) % 2 == 0 else "0" + raw
    return ":".join(raw[i : i + 2] for i in range(0, len(raw), 2))


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def load_certificates(text: str, what: str) -> list[x509.Certificate]:
    """Every certificate in a PEM text (an empty text: none)."""
    if not text.strip():
        return []
    try:
        return x509.load_pem_x509_certificates(text.encode())
    except ValueError:
        raise RotationError(f"{what} is not PEM certificates.", retryable=False) from None


def load_private_key(text: str, what: str) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError):  # the parser's text never reaches the message
        raise RotationError(
            f"{what} is not an unencrypted PEM private key.", retryable=False
        ) from None


def issuer_key(key: PrivateKeyTypes, what: str) -> CertificateIssuerPrivateKeyTypes:
    """``key`` if it can sign certificates."""
    if isinstance(
        key,
        rsa.RSAPrivateKey
        | ec.EllipticCurvePrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey,
    ):
        return key
    raise RotationError(f"{what} cannot sign certificates ({type(key).__name__}).", retryable=False)


def not_after_of(value: SecretValue) -> datetime | None:
    """When the certificate in ``value`` expires (None if it holds none that parses)."""
    if not isinstance(value, Mapping) or not isinstance(value.get("certificate"), str):
        return None
    try:
        cert = x509.load_pem_x509_certificates(str(value["certificate"]).encode())[0]
    except (ValueError, IndexError):
        return None
    return cert.not_valid_after_utc


def key_matches(bundle: Bundle) -> bool:
    """Whether the private key signs what the certificate's public key verifies."""
    key, public = bundle.private_key, bundle.certificate.public_key()
    try:
        if isinstance(key, rsa.RSAPrivateKey) and isinstance(public, rsa.RSAPublicKey):
            signature = key.sign(_CHALLENGE, padding.PKCS1v15(), hashes.SHA256())
            public.verify(signature, _CHALLENGE, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(
            public, ec.EllipticCurvePublicKey
        ):
            signature = key.sign(_CHALLENGE, ec.ECDSA(hashes.SHA256()))
            public.verify(signature, _CHALLENGE, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, ed25519.Ed25519PrivateKey) and isinstance(
            public, ed25519.Ed25519PublicKey
        ):
            public.verify(key.sign(_CHALLENGE), _CHALLENGE)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def verify_bundle(
    bundle: Bundle,
    anchors: Sequence[x509.Certificate],
    *,
    now: datetime | None = None,
    names: Names | None = None,
    where: str,
) -> None:
    """Raise :class:`TargetRejected` unless a TLS client trusting ``anchors`` would accept the
    bundle for each of ``names`` (default: the certificate's own), at ``now``."""
    from cryptography.x509.verification import (
        PolicyBuilder,
        Store,
        VerificationError,
    )

    now = now or datetime.now(UTC)
    cert = bundle.certificate
    if not key_matches(bundle):
        raise TargetRejected(f"{where}: the private key does not belong to the certificate.")
    if not anchors:
        raise TargetRejected(f"{where}: no CA certificate to verify against.")
    wanted = names or Names.of(cert)
    subjects: list[x509.DNSName | x509.IPAddress] = [x509.DNSName(d) for d in wanted.all_dns()]
    subjects += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in wanted.ips]
    if not subjects:
        raise TargetRejected(f"{where}: the certificate names no DNS name or IP address.")
    builder = PolicyBuilder().store(Store(list(anchors))).time(now.replace(tzinfo=None))
    intermediates = [c for c in bundle.chain if not _self_signed(c)]
    for subject in subjects:
        try:
            builder.build_server_verifier(subject).verify(cert, intermediates)
        except VerificationError as exc:
            raise TargetRejected(
                f"{where}: a TLS client trusting the CA would refuse the certificate (serial "
                f"{serial_text(cert.serial_number)}) for {subject.value}: {_reason(exc)}."
            ) from None


def _reason(exc: Exception) -> str:
    # cryptography's message names certificates and rules only, never key material
    text = str(exc).replace("\n", " ")
    return text if len(text) <= 200 else text[:197] + "..."


def _self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
