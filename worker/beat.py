"""Beat's only entry: ``keyturn.dispatch_due`` every few seconds. Due-ness lives in the ledger,
so beat keeps no state worth losing, and a second beat only sends redundant ticks."""

from __future__ import annotations

from typing import Any

from rotation.config import EngineSettings
from rotation.scheduler.tasks import DISPATCH_DUE


def beat_schedule(settings: EngineSettings) -> dict[str, dict[str, Any]]:
    tick = settings.tick.total_seconds()
    return {
        "keyturn-dispatch-due": {
            "task": DISPATCH_DUE,
            "schedule": tick,
            # a tick nobody picked up in time is worthless: the next one does the same work
            "options": {"expires": max(tick * 2, 5.0)},
        }
    }
