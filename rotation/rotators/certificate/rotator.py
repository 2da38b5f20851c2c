"""The ``certificate`` rotator: a new TLS key and certificate before the current one expires.

Secret value: ``{"certificate", "private_key", "chain"}`` (PEM; other fields are carried over).
The issuer is an internal CA kept as a secret in the backend, or an OpenBao / Vault PKI role.
A certificate is valid from the moment it is issued, and the old one stays valid until it
expires: the dual window is natural. ``apply`` has nothing to change (servers load the new
certificate at the restart step, e.g. ``on_rotate``); ``test`` checks the new bundle as a TLS
client would; ``retire`` revokes the old certificate (OpenBao, ``revoke: true``).

``expires_at(value)`` tells the scheduler when a value stops working, for ``renew_before``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from rotation.errors import RotationError, TargetRejected
from rotation.rotators.base import Capabilities, RotationContext, run_versions, target_of
from rotation.rotators.certificate.bundle import Bundle, Names, not_after_of, verify_bundle
from rotation.rotators.certificate.issuers import InternalCa, OpenBaoPki
from rotation.rotators.certificate.target import CertificateTarget
from rotation.values import SecretValue

__all__ = ["CertificateRotator"]

#: The validity of a new certificate when neither the target nor the current one says.
DEFAULT_LIFETIME = timedelta(days=90)


class CertificateRotator:
    """TLS certificates: both the old and the new one are valid until the old one expires."""

    kind = "certificate"
    Target = CertificateTarget
    capabilities = Capabilities(dual_valid=True, revokes=False)

    @classmethod
    def capabilities_for(cls, target: CertificateTarget) -> Capabilities:
        return Capabilities(dual_valid=True, revokes=target.issuer == "openbao" and target.revoke)

    @staticmethod
    def expires_at(value: SecretValue) -> datetime | None:
        """When the certificate in ``value`` expires (its ``not_after``); None if it has none."""
        return not_after_of(value)

    # --- steps -----------------------------------------------------------------------------

    def create(self, ctx: RotationContext, current: SecretValue) -> SecretValue:
        staged = ctx.staged()
        if staged is not None:
            return staged.value
        target = target_of(ctx, CertificateTarget)
        if not isinstance(current, Mapping):
            raise RotationError(
                f"The current value of {ctx.secret!r} must be a JSON object with certificate, "
                "private_key and chain (PEM).",
                retryable=False,
            )
        old = _maybe_bundle(current)
        names = _names(target, old, ctx.secret)
        now = datetime.now(UTC)
        if target.issuer == "internal":
            assert target.ca_secret is not None
            ca = InternalCa(ctx.secret_value(target.ca_secret), target.ca_secret)
            lifetime = target.ttl or (_lifetime(old) if old is not None else DEFAULT_LIFETIME)
            bundle = ca.issue(names, lifetime, target.key_type, now)
        else:
            ctx.check_lease()
            bundle = self._pki(target).issue(names, target.ttl)
        return bundle.to_value(current)

    def apply(self, ctx: RotationContext) -> None:
        """Nothing to change at a target: a certificate is valid once issued. The value must
        parse (servers load it at the restart step)."""
        new_version, _ = run_versions(ctx)
        Bundle.parse(new_version.value, f"The new value of {ctx.secret!r}")

    def test(self, ctx: RotationContext) -> None:
        """Would a TLS client trusting the CA accept the new certificate for its names?"""
        target = target_of(ctx, CertificateTarget)
        new_version, old_version = run_versions(ctx)
        new = Bundle.parse(new_version.value, f"The new value of {ctx.secret!r}")
        old = _maybe_bundle(old_version.value)
        names = (
            _names(target, old, ctx.secret)
            if _has_names(target) or old
            else Names.of(new.certificate)
        )
        where = f"The new certificate of {ctx.secret!r}"
        if target.issuer == "internal":
            assert target.ca_secret is not None
            anchors = InternalCa(ctx.secret_value(target.ca_secret), target.ca_secret).anchors
        else:
            pki = self._pki(target)
            ctx.check_lease()
            anchors = pki.anchors()
        verify_bundle(new, anchors, names=names, where=where)
        if target.issuer == "openbao" and target.revoke:
            ctx.check_lease()
            if self._pki(target).revoked(new.serial):
                raise TargetRejected(f"{where} (serial {new.serial}) is revoked.")

    def retire(self, ctx: RotationContext, old: SecretValue) -> None:
        """Revoke the old certificate (OpenBao with ``revoke``); else it just expires."""
        target = target_of(ctx, CertificateTarget)
        if target.issuer != "openbao" or not target.revoke:
            return
        retired = Bundle.parse(old, f"The previous value of {ctx.secret!r}")
        current = Bundle.parse(ctx.current().value, f"The current value of {ctx.secret!r}")
        if retired.serial == current.serial:
            raise RotationError(
                f"Refusing to revoke the certificate {ctx.secret!r} currently uses.",
                retryable=False,
            )
        ctx.check_lease()
        self._pki(target).revoke(retired.serial)

    def undo(self, ctx: RotationContext) -> None:
        """Before promotion, revoke this run's certificate (OpenBao with ``revoke``): its key
        was only ever in the discarded pending value. After a rollback nothing is done: servers
        that loaded it keep serving it until they reload; it expires on its own."""
        target = target_of(ctx, CertificateTarget)
        if ctx.current().token == ctx.token:
            raise RotationError(
                f"Undo of {ctx.secret!r} while this run's value is current: roll back first.",
                retryable=False,
            )
        staged = ctx.staged()
        if staged is None or target.issuer != "openbao" or not target.revoke:
            return
        discarded = _maybe_bundle(staged.value)
        current = _maybe_bundle(ctx.current().value)
        if discarded is None or (current is not None and current.serial == discarded.serial):
            return
        ctx.check_lease()
        self._pki(target).revoke(discarded.serial)

    # --- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _pki(target: CertificateTarget) -> OpenBaoPki:
        assert target.role is not None
        return OpenBaoPki(target.mount, target.role, os.environ)


def _maybe_bundle(value: SecretValue) -> Bundle | None:
    try:
        return Bundle.parse(value, "value")
    except RotationError:
        return None


def _has_names(target: CertificateTarget) -> bool:
    return bool(target.common_name or target.dns_names or target.ip_addresses)


def _names(target: CertificateTarget, old: Bundle | None, secret: str) -> Names:
    """The target's names, else the current certificate's."""
    if _has_names(target):
        return Names(target.common_name, target.dns_names, target.ip_addresses)
    if old is None:
        raise RotationError(
            f"The current value of {secret!r} holds no certificate to renew: name the "
            "certificate in the policy (target.common_name, target.dns_names).",
            retryable=False,
        )
    return Names.of(old.certificate)


def _lifetime(bundle: Bundle) -> timedelta:
    cert = bundle.certificate
    return max(timedelta(minutes=1), cert.not_valid_after_utc - cert.not_valid_before_utc)
