"""What a rotation callback receives (``manager.on_rotate(name, callback)``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RotateCallback", "RotationEvent"]


@dataclass(frozen=True)
class RotationEvent:
    """A promotion this consumer must move to; read the new value with ``manager.get``."""

    secret: str
    version: str
    run_id: int | None = None


RotateCallback = Callable[[RotationEvent], None]
