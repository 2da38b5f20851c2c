"""Where a new certificate comes from: an internal CA whose certificate and key are a secret in
the backend (signed here with ``cryptography``), or an OpenBao / Vault PKI secrets engine
(``<mount>/issue/<role>``, which makes the key and signs it)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rotation.errors import RotationError, TargetRejected
from rotation.rotators.certificate.bundle import (
    Bundle,
    Names,
    issuer_key,
    load_certificates,
    load_private_key,
)
from rotation.values import SecretValue

__all__ = ["KEY_TYPES", "InternalCa", "OpenBaoPki"]

T = TypeVar("T")

#: Key types the internal CA makes for a new certificate.
KEY_TYPES: dict[str, Callable[[], Any]] = {
    "ec-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ec-p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "rsa-2048": lambda: rsa.generate_private_key(65537, 2048),
    "rsa-3072": lambda: rsa.generate_private_key(65537, 3072),
    "rsa-4096": lambda: rsa.generate_private_key(65537, 4096),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
}
#: A new certificate is valid from a little before now: clients whose clocks lag still take it.
BACKDATE = timedelta(minutes=5)


class InternalCa:
    """A CA held in a secret, ``{"certificate", "private_key"}`` (PEM), that signs here."""

    def __init__(self, value: SecretValue, secret: str) -> None:
        what = f"The CA secret {secret!r}"
        if not isinstance(value, Mapping) or not all(
            isinstance(value.get(k), str) for k in ("certificate", "private_key")
        ):
            raise RotationError(
                f"{what} must be a JSON object with certificate and private_key (PEM).",
                retryable=False,
            )
        certificates = load_certificates(str(value["certificate"]), f"{what}'s certificate")
        if not certificates:
            raise RotationError(f"{what} holds no certificate.", retryable=False)
        self.certificate = certificates[0]
        #: The CA's own chain up to its root (empty for a root CA).
        self.chain = tuple(certificates[1:])
        self.key = issuer_key(load_private_key(str(value["private_key"]), what), what)
        if self.key.public_key() != self.certificate.public_key():
            raise RotationError(f"{what}: the key does not belong to the CA certificate.")
        self.secret = secret

    @property
    def anchors(self) -> list[x509.Certificate]:
        """What clients trust: the CA's root (its certificate when it is a root)."""
        return [self.chain[-1] if self.chain else self.certificate]

    def issue(self, names: Names, lifetime: timedelta, key_type: str, now: datetime) -> Bundle:
        """A new key and a certificate for ``names`` valid ``lifetime`` (at most the CA's)."""
        key = KEY_TYPES[key_type]()
        not_after = min(now + lifetime, self.certificate.not_valid_after_utc)
        if not_after <= now:
            expired = self.certificate.not_valid_after_utc
            raise TargetRejected(
                f"The CA in {self.secret!r} expired at {expired:%Y-%m-%d}: renew the CA first."
            )
        subject = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, names.common_name)]
            if names.common_name
            else []
        )
        alt: list[x509.GeneralName] = [x509.DNSName(d) for d in names.all_dns()]
        alt += [x509.IPAddress(_ip(i)) for i in names.ips]
        ca_public = self.certificate.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(key), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public),  # type: ignore[arg-type]
                critical=False,
            )
        )
        cert = builder.sign(self.key, _hash_for(self.key))
        return Bundle(cert, key, (self.certificate, *self.chain))


def _ip(text: str) -> Any:
    import ipaddress

    return ipaddress.ip_address(text)


def _key_usage(key: Any) -> x509.KeyUsage:
    rsa_key = isinstance(key, rsa.RSAPrivateKey)
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=rsa_key,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _hash_for(key: Any) -> hashes.SHA256 | hashes.SHA384 | None:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


class OpenBaoPki:
    """An OpenBao (or Vault) PKI mount, reached with the workers' ``VAULT_*`` settings."""

    _connections: ClassVar[dict[tuple[object, ...], Any]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, mount: str, role: str, environ: Mapping[str, str]) -> None:
        self.mount, self.role = mount, role
        self._conn = self._connection(environ)
        self.address: str = self._conn.address

    @classmethod
    def _connection(cls, environ: Mapping[str, str]) -> Any:
        from rotation.providers.vault.auth import VaultConnection, settings_from_env

        settings = settings_from_env(environ)
        settings.pop("mount_point", None)
        settings.pop("path_prefix", None)
        key = tuple(sorted((k, repr(v)) for k, v in settings.items()))
        with cls._lock:
            conn = cls._connections.get(key)
            if conn is None:
                conn = cls._connections[key] = VaultConnection(**settings)
            return conn

    def _call(self, action: str, operation: Callable[[Any], T]) -> T:
        import hvac.exceptions as hv

        def guarded(client: Any) -> T:
            try:
                return operation(client)
            except (hv.InvalidRequest, hv.InvalidPath) as exc:
                detail = "; ".join(str(e) for e in (exc.errors or []))[:300]
                raise TargetRejected(
                    f"OpenBao PKI at {self.address} ({self.mount}, role {self.role!r}) refused "
                    f"{action}: {detail or type(exc).__name__}."
                ) from None

        result: T = self._conn.call(guarded)
        return result

    def issue(self, names: Names, ttl: timedelta | None) -> Bundle:
        """``<mount>/issue/<role>``: a new key and certificate, made and signed by OpenBao."""
        params: dict[str, object] = {"format": "pem", "private_key_format": "pkcs8"}
        dns = [d for d in names.all_dns() if d != names.common_name]
        if dns:
            params["alt_names"] = ",".join(dns)
        if names.ips:
            params["ip_sans"] = ",".join(names.ips)
        if ttl is not None:
            params["ttl"] = f"{int(ttl.total_seconds())}s"
        common_name = names.common_name or names.first
        if not common_name:
            raise RotationError("No name to issue the certificate for.", retryable=False)
        answer = self._call(
            "the issue request",
            lambda client: client.secrets.pki.generate_certificate(
                self.role, common_name, extra_params=params, mount_point=self.mount
            ),
        )
        data = answer["data"]
        chain = data.get("ca_chain") or [data.get("issuing_ca") or ""]
        return Bundle.parse(
            {
                "certificate": data["certificate"],
                "private_key": data["private_key"],
                "chain": "".join(c if c.endswith("\n") else c + "\n" for c in chain),
            },
            "The certificate OpenBao issued",
        )

    def anchors(self) -> list[x509.Certificate]:
        """The mount's CA chain: what a client trusts (its last certificate, the root)."""
        text = self._call(
            "reading its CA chain",
            lambda client: client.secrets.pki.read_ca_certificate_chain(mount_point=self.mount),
        )
        found = load_certificates(str(text), f"The CA chain of {self.mount}")
        if not found:
            text = self._call(
                "reading its CA",
                lambda client: client.secrets.pki.read_ca_certificate(mount_point=self.mount),
            )
            found = load_certificates(str(text), f"The CA of {self.mount}")
        return found[-1:]

    def revoke(self, serial: str) -> None:
        """Revoke ``serial`` (revoking it again, an expired one, or one this mount never issued
        changes nothing)."""
        import hvac.exceptions as hv

        def operation(client: Any) -> None:
            try:
                client.secrets.pki.revoke_certificate(serial, mount_point=self.mount)
            except hv.InvalidRequest as exc:
                text = " ".join(str(e) for e in (exc.errors or [])).lower()
                # expired, revoked before, or never issued by this mount: nothing to revoke
                if "expired" in text or "already revoked" in text or "not found" in text:
                    return
                raise

        self._call(f"revoking serial {serial}", operation)

    def revoked(self, serial: str) -> bool:
        answer = self._call(
            f"reading serial {serial}",
            lambda client: client.secrets.pki.read_certificate(serial, mount_point=self.mount),
        )
        return bool((answer.get("data") or {}).get("revocation_time"))
