"""What a step gets and returns (kept apart from the steps so strategies can import it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from rotation.errors import RotationError
from rotation.policy import Policy
from rotation.providers.base import Provider
from rotation.rotators.base import RotationContext, Rotator, StepGuard
from rotation.values import SecretValue

if TYPE_CHECKING:
    from rotation.rollout import RolloutBus

__all__ = ["Move", "StepInput", "StepResult", "StepServices"]


@dataclass(frozen=True)
class Move:
    """What a restart strategy tells the consumers: ``version`` is current now. For a rollback,
    ``rollback_of`` is the version the run abandons (its consumers move back)."""

    version: str
    rollback_of: str | None = None

    @property
    def event(self) -> str:
        """``promoted`` or ``rolled_back`` (a command's KEYTURN_EVENT, a webhook's event)."""
        return "rolled_back" if self.rollback_of is not None else "promoted"


class StepServices(Protocol):
    """What a step may ask of the engine beyond the backend and the rotator."""

    def bus(self) -> RolloutBus:
        """The Redis rollout bus (acknowledgements)."""
        ...

    def claim_restart_slot(self, concurrency: int) -> bool:
        """Take one of the policy's ``concurrency`` restart slots for this run (idempotent)."""
        ...

    def read_secret(self, name: str) -> SecretValue:
        """Another secret's current value (an admin credential, an HMAC key)."""
        ...


class _Unguarded:
    """No lease to check (a step input built outside the engine)."""

    def check(self) -> None:
        return None

    def remaining(self) -> float:
        return float("inf")


_UNGUARDED = _Unguarded()


@dataclass(frozen=True)
class StepResult:
    """What a step achieved: done (move on), or wait until ``wait_until`` and ask again."""

    wait_until: datetime | None = None
    from_version: str | None = None
    to_version: str | None = None
    note: str | None = None
    #: Progress to keep across waits (None: leave as is; {}: clear).
    step_data: dict[str, Any] | None = None
    #: A piece of the step is done (a restart wave, a phase of a rollback): the next piece
    #: starts with fresh attempts.
    piece_done: bool = False


@dataclass(frozen=True)
class StepInput:
    """Everything a step may use; no secret value is kept here."""

    run_id: int
    secret: str
    token: str
    policy: Policy
    provider: Provider
    rotator: Rotator
    context: RotationContext
    from_version: str | None
    to_version: str | None
    state_entered_at: datetime
    now: datetime
    services: StepServices
    step_data: dict[str, Any] = field(default_factory=dict)
    #: The step's lease and budget: ``guard.check()`` before every external action (a backend
    #: write, a restart command, a webhook), timeouts capped by ``guard.remaining()``.
    guard: StepGuard = field(default=_UNGUARDED)
    #: What the restart strategy announces (None: the run's promotion of ``to_version``).
    move: Move | None = None

    @staticmethod
    def unguarded() -> StepGuard:
        """No lease to check (a step input built outside the engine)."""
        return _UNGUARDED

    def announced(self) -> Move:
        """The move the restart strategy tells consumers about."""
        if self.move is not None:
            return self.move
        if self.to_version is None:
            raise RotationError("no promoted version recorded for this run", retryable=False)
        return Move(self.to_version)
