"""The ``random`` rotator: a fresh random value (API key, token), optionally pushed to an issuer.

Without an issuer hook the value lives only in the backend and apply/test/retire/undo do nothing.
With ``target.issuer = "package.module:attr"`` (imported on first use; a class is instantiated
without arguments) the rotator calls whichever of these the hook defines::

    apply(secret, value)       make the issuer accept the new value
    test(secret, value)        prove it works (raise if not)
    retire(secret, old_value)  revoke the old value
    undo(secret)               forget the new value again

A hook that raises :class:`~rotation.errors.RotationError` keeps its message; any other error
becomes a RotationError naming only the hook and the exception class (values never leak).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import field_validator

from rotation.errors import ConfigurationError, RotationError, SecretNotFound
from rotation.generator import generate
from rotation.registry import import_object
from rotation.rotators.base import Capabilities, RotationContext
from rotation.schema import Spec, short_repr
from rotation.values import SecretValue, with_new_secret

__all__ = ["RandomRotator", "RandomTarget", "load_issuer"]


_ISSUER = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class RandomTarget(Spec):
    """``random``: an optional issuer hook told about each new value."""

    issuer: str | None = None

    @field_validator("issuer")
    @classmethod
    def _import_path(cls, value: str | None) -> str | None:
        if value is not None and not _ISSUER.fullmatch(value):
            raise ValueError(f"invalid issuer {short_repr(value)}: use 'package.module:attr'")
        return value


def load_issuer(path: str) -> Any:
    """The object named by ``"package.module:attr"`` (instantiated if it is a class)."""
    try:
        found = import_object(path, what="issuer")
    except ImportError as exc:
        raise ConfigurationError(f"Cannot load issuer {path!r}: {type(exc).__name__}.") from exc
    return found() if isinstance(found, type) else found


class RandomRotator:
    """A new random value each rotation; an optional issuer hook moves it to where it is used."""

    kind = "random"
    Target = RandomTarget
    #: The issuer (when there is one) keeps both values until retire; only its hook revokes.
    capabilities = Capabilities(dual_valid=True, revokes=False)

    @classmethod
    def capabilities_for(cls, target: RandomTarget) -> Capabilities:
        """Revokes when the issuer hook defines ``retire``."""
        if target.issuer is None:
            return cls.capabilities
        hook = import_object(target.issuer, what="issuer")
        return Capabilities(dual_valid=True, revokes=callable(getattr(hook, "retire", None)))

    def __init__(self) -> None:
        self._issuers: dict[str, Any] = {}

    def create(self, ctx: RotationContext, current: SecretValue) -> SecretValue:
        """A fresh value, by the one rule of ``rotation.values.with_new_secret``: a string is
        replaced; in a JSON object the first of password/api_key/token changes."""
        try:
            staged = ctx.pending()
            if staged.token == ctx.token:
                return staged.value
        except SecretNotFound:
            pass
        return with_new_secret(ctx.secret, current, generate(ctx.generator))

    def apply(self, ctx: RotationContext) -> None:
        self._call(ctx, "apply", ctx.secret, self._new_value(ctx))

    def test(self, ctx: RotationContext) -> None:
        self._call(ctx, "test", ctx.secret, self._new_value(ctx))

    def retire(self, ctx: RotationContext, old: SecretValue) -> None:
        self._call(ctx, "retire", ctx.secret, old)

    def undo(self, ctx: RotationContext) -> None:
        self._call(ctx, "undo", ctx.secret)

    def _issuer(self, ctx: RotationContext) -> Any:
        path = ctx.target.get("issuer")
        if not path:
            return None
        if path not in self._issuers:
            self._issuers[path] = load_issuer(str(path))
        return self._issuers[path]

    def _call(self, ctx: RotationContext, step: str, *args: Any) -> None:
        hook = getattr(self._issuer(ctx), step, None)
        if hook is None:
            return
        try:
            hook(*args)
        except RotationError:
            raise
        except Exception as exc:
            raise RotationError(
                f"The issuer {ctx.target.get('issuer')!r} failed to {step} {ctx.secret!r}: "
                f"{type(exc).__name__}."
            ) from None

    @staticmethod
    def _new_value(ctx: RotationContext) -> SecretValue:
        """This run's value: pending, or current once promoted."""
        try:
            pending = ctx.pending()
            if pending.token == ctx.token:
                return pending.value
        except SecretNotFound:
            pass
        current = ctx.current()
        if current.token != ctx.token:
            raise RotationError(f"No version of {ctx.secret!r} is staged under this run's token.")
        return current.value
