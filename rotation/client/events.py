"""What a rotation callback receives (``manager.on_rotate(name, callback)``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RotateCallback", "RotationEvent"]


@dataclass(frozen=True)
class RotationEvent:
    """A version this consumer must move to; read it with ``manager.get``. Usually a
    promotion; after a rollback ``rollback_of`` names the abandoned version and ``version`` is
    the one that is current again (the same callback moves the consumer back)."""

    secret: str
    version: str
    run_id: int | None = None
    rollback_of: str | None = None


RotateCallback = Callable[[RotationEvent], None]
