"""The rotator contract: one module per credential kind, four steps plus an undo.

Each step is idempotent (AWS's createSecret / setSecret / testSecret / finishSecret contract):
it returns early when its effect is already there. The engine owns the backend stages
(stage_pending, promote, rollback); rotators own the *target* (a database, an issuer).
A kind declares its ``Target`` schema and its :class:`Capabilities`; ``tests/contract/``
holds the suite every kind passes (docs/rotators.md, "The contract").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from rotation.errors import ConfigurationError, RotationError, SecretNotFound
from rotation.generator import GeneratorPolicy
from rotation.providers.base import Provider
from rotation.values import SecretValue, SecretVersion, Stage

__all__ = ["Capabilities", "RotationContext", "Rotator", "StepGuard", "run_versions", "target_of"]

T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class Capabilities:
    """What a kind promises about the old and the new credential (the contract suite checks
    both, against the kind's real server)."""

    #: Between promote and retire both the old and the new credential work (zero downtime).
    dual_valid: bool
    #: After retire the old credential is refused at the target.
    revokes: bool


class StepGuard(Protocol):
    """The running step's lease and time budget (given by the engine)."""

    def check(self) -> None:
        """Raise :class:`~rotation.errors.LeaseLost` unless this worker still holds the run's
        lease (asked of the ledger), or :class:`~rotation.errors.StepBudgetExceeded` when the
        step's budget is used up. Call it before every external action."""
        ...

    def remaining(self) -> float:
        """Seconds left in the step's budget (an action's timeout must not exceed it)."""
        ...


@dataclass
class RotationContext:
    """What a step may see: the secret, its backend, the run's token and the policy's settings."""

    secret: str
    provider: Provider
    token: str
    generator: GeneratorPolicy
    #: Kind-specific settings from the policy's ``target`` block.
    target: Mapping[str, Any] = field(default_factory=dict)
    #: Reads another secret's current value (e.g. the admin credential a rotator needs).
    read_secret: Callable[[str], SecretValue] | None = None
    #: The step's lease and budget; None outside the engine (no lease to check).
    guard: StepGuard | None = None

    def check_lease(self) -> None:
        """Before an external action (SQL on the target, a call to an issuer): raise if this
        worker lost the run's lease or the step's budget is used up."""
        if self.guard is not None:
            self.guard.check()

    def time_left(self, cap: float) -> float:
        """``cap`` seconds, or less when the step's budget ends sooner (at least 0.1)."""
        if self.guard is None:
            return cap
        return max(0.1, min(cap, self.guard.remaining()))

    def current(self) -> SecretVersion:
        return self.provider.read(self.secret, stage=Stage.CURRENT)

    def pending(self) -> SecretVersion:
        return self.provider.read(self.secret, stage=Stage.PENDING)

    def previous(self) -> SecretVersion | None:
        try:
            return self.provider.read(self.secret, stage=Stage.PREVIOUS)
        except SecretNotFound:
            return None

    def staged(self) -> SecretVersion | None:
        """The pending version if it belongs to this run (None otherwise)."""
        try:
            pending = self.pending()
        except SecretNotFound:
            return None
        return pending if pending.token == self.token else None

    def secret_value(self, name: str) -> SecretValue:
        """Another secret's current value (an admin credential, an HMAC key)."""
        if self.read_secret is None:
            raise RotationError(f"This rotation of {self.secret!r} cannot read other secrets.")
        return self.read_secret(name)


class Rotator(Protocol):
    """A credential kind. ``create`` only computes; the engine stores the result as pending.

    A kind whose promises depend on its target block (a ``single`` mode that is not
    zero-downtime) also defines ``capabilities_for(cls, target) -> Capabilities`` as a
    classmethod; :func:`rotation.rotators.registry.capabilities_of` asks it. A kind whose
    credentials expire (certificates) defines ``expires_at(value) -> datetime | None`` as a
    staticmethod: the scheduler records it and policies may renew ``renew_before`` it."""

    kind: str
    #: The schema of the policy's ``target`` block (validated when policies load).
    Target: ClassVar[type[BaseModel]]
    #: What the kind promises in its default mode.
    capabilities: ClassVar[Capabilities]

    def create(self, ctx: RotationContext, current: SecretValue) -> SecretValue:
        """A new value derived from the current one (same username, new password...)."""
        ...

    def apply(self, ctx: RotationContext) -> None:
        """Make the target accept the pending value; the current value must keep working."""
        ...

    def test(self, ctx: RotationContext) -> None:
        """Prove the pending (or, after promotion, current) value works; raise if not."""
        ...

    def retire(self, ctx: RotationContext, old: SecretValue) -> None:
        """Revoke ``old`` at the target, after consumers moved and the grace passed."""
        ...

    def undo(self, ctx: RotationContext) -> None:
        """Make the target accept the backend's CURRENT value again, and only it: before
        promotion the engine calls it *before* it discards the pending value (``ctx.staged()``
        still reads it); after a promotion, once the rollback was announced to consumers and
        they moved back, so it may revoke the abandoned credential. A no-op where nothing
        changed."""
        ...


def run_versions(ctx: RotationContext) -> tuple[SecretVersion, SecretVersion]:
    """This run's version (pending, or current once promoted) and the one it replaces."""
    staged = ctx.staged()
    if staged is not None:
        return staged, ctx.current()
    current = ctx.current()
    if current.token == ctx.token:
        previous = ctx.previous()
        if previous is None:
            raise RotationError(f"{ctx.secret!r} has no previous version.")
        return current, previous
    raise RotationError(
        f"No version of {ctx.secret!r} is staged under this run's token: run create first."
    )


def target_of(ctx: RotationContext, schema: type[T]) -> T:
    """The run's ``target`` block as ``schema`` (the kind's ``Target``, already checked when the
    policy loaded; a ledger row written by an older version may still fail here)."""
    try:
        return schema.model_validate(dict(ctx.target))
    except ValidationError as exc:
        raise ConfigurationError(
            f"The policy's target block for {ctx.secret!r} is invalid ({exc.error_count()} "
            "error(s)): run `keyturn policies check`."
        ) from None
