"""The ``ldap`` kind's ``target`` block: one account's password, or two alternating accounts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from rotation.errors import RotationError
from rotation.schema import Spec, check_secret_name, short_repr

__all__ = ["LdapTarget", "clone_dn"]


def clone_dn(dn: str) -> str:
    """``uid=svc,ou=services,...`` -> ``uid=svc_clone,ou=services,...``."""
    first, _, rest = dn.partition(",")
    attribute, _, value = first.partition("=")
    return f"{attribute}={value}_clone" + (f",{rest}" if rest else "")


class LdapTarget(Spec):
    """``ldap``: change one account's password, or alternate between two accounts."""

    mode: Literal["single", "alternating"] = "single"
    #: A bind DN and password (``{"bind_dn", "password"}``, ``url`` optional) allowed to set
    #: the accounts' passwords; required for alternating. Without it (single), the account
    #: changes its own password with the current one.
    admin_secret: str | None = Field(default=None, validate_default=True)
    #: The two alternating accounts' DNs; default: the secret's DN and its first RDN + "_clone".
    accounts: tuple[str, str] | None = None
    #: Upgrade ``ldap://`` with StartTLS (``ldaps://`` URLs use TLS from the start).
    start_tls: bool = False
    #: Trust this CA file for the server's certificate instead of the system's.
    ca_file: str | None = None
    #: Allow passwords over an unencrypted ``ldap://`` connection to a non-loopback host.
    allow_plaintext: bool = False
    connect_timeout: float = Field(default=5, gt=0, le=120)

    @field_validator("admin_secret")
    @classmethod
    def _admin(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("mode") == "alternating":
            raise ValueError("required for mode 'alternating' (the DN that sets both passwords)")
        return None if value is None else check_secret_name(value)

    @field_validator("accounts")
    @classmethod
    def _accounts(
        cls, value: tuple[str, str] | None, info: ValidationInfo
    ) -> tuple[str, str] | None:
        if value is None:
            return None
        if info.data.get("mode") != "alternating":
            raise ValueError("only mode 'alternating' uses two accounts")
        for dn in value:
            if "=" not in dn:
                raise ValueError(f"invalid DN {short_repr(dn)}, e.g. 'uid=app,ou=services,dc=x'")
        if _norm(value[0]) == _norm(value[1]):
            raise ValueError("the two accounts must differ")
        return value

    def pair(self, dn: str) -> tuple[str, str]:
        if self.accounts is not None:
            return self.accounts
        base = dn
        first, _, rest = dn.partition(",")
        if first.endswith("_clone"):
            base = first.removesuffix("_clone") + (f",{rest}" if rest else "")
        return (base, clone_dn(base))

    def other(self, dn: str) -> str:
        first, second = self.pair(dn)
        if _norm(dn) == _norm(first):
            return second
        if _norm(dn) == _norm(second):
            return first
        raise RotationError(
            f"The secret's bind DN {dn!r} is neither of target.accounts.", retryable=False
        )


def _norm(dn: str) -> str:
    return ",".join(part.strip().lower() for part in dn.split(","))
