"""The ``certificate`` kind's ``target`` block: which issuer, and what to ask of it."""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from rotation.durations import Duration
from rotation.schema import Spec, check_secret_name, short_repr

__all__ = ["CertificateTarget"]

_DNS = re.compile(r"(\*\.)?([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*[A-Za-z0-9_-]{1,63}")
_MOUNT = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")


class CertificateTarget(Spec):
    """``certificate``: a new key and certificate from an internal CA or an OpenBao PKI role."""

    issuer: Literal["internal", "openbao"]
    #: internal: the secret holding the CA, ``{"certificate", "private_key"}`` (PEM).
    ca_secret: str | None = Field(default=None, validate_default=True)
    #: openbao: the PKI mount and the role to issue with (``<mount>/issue/<role>``).
    mount: str = "pki"
    role: str | None = Field(default=None, validate_default=True)
    #: openbao: revoke the old certificate at retire (and a discarded new one at undo).
    revoke: bool = True
    #: The names to issue for; default: the current certificate's common name and SANs.
    common_name: str | None = None
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    #: Validity of a new certificate; default: the current certificate's (internal), the
    #: role's ttl (openbao).
    ttl: Duration | None = None
    #: internal: the new key's type (OpenBao's role decides its own).
    key_type: Literal["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519"] = (
        "ec-p256"
    )

    @field_validator("ca_secret")
    @classmethod
    def _ca(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("issuer") == "internal":
            raise ValueError("required for issuer 'internal' (the secret holding the CA)")
        if value is not None and info.data.get("issuer") == "openbao":
            raise ValueError("only issuer 'internal' uses a CA secret")
        return None if value is None else check_secret_name(value)

    @field_validator("mount")
    @classmethod
    def _mount(cls, value: str) -> str:
        if not _MOUNT.fullmatch(value.strip("/")):
            raise ValueError(f"invalid mount {short_repr(value)}: e.g. 'pki' or 'pki_int'")
        return value.strip("/")

    @field_validator("role")
    @classmethod
    def _role(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("issuer") == "openbao":
            raise ValueError("required for issuer 'openbao' (the PKI role to issue with)")
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
            raise ValueError(f"invalid role name {short_repr(value)}")
        return value

    @field_validator("dns_names")
    @classmethod
    def _dns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _DNS.fullmatch(name):
                raise ValueError(f"invalid DNS name {short_repr(name)}")
        return value

    @field_validator("ip_addresses")
    @classmethod
    def _ips(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for text in value:
            try:
                ipaddress.ip_address(text)
            except ValueError:
                raise ValueError(f"invalid IP address {short_repr(text)}") from None
        return value

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: object) -> object:
        from datetime import timedelta

        if isinstance(value, timedelta) and value < timedelta(minutes=1):
            raise ValueError("must be at least 1m")
        return value

    @model_validator(mode="after")
    def _issuer_fields(self) -> CertificateTarget:
        if self.issuer == "internal" and (self.role is not None):
            raise ValueError("'role' is for issuer 'openbao'")
        return self
