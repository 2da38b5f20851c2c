"""Beat's only entry: ``keyturn.dispatch_due`` every few seconds. Due-ness lives in the ledger,
so beat keeps no state worth losing, and a second beat only sends redundant ticks."""

from __future__ import annotations

import os
from typing import Any

DEFAULT_TICK_SECONDS = 5.0


def tick_seconds() -> float:
    raw = os.environ.get("KEYTURN_TICK_SECONDS", "")
    try:
        value = float(raw) if raw else DEFAULT_TICK_SECONDS
    except ValueError:
        raise SystemExit(f"KEYTURN_TICK_SECONDS must be a number of seconds, not {raw!r}") from None
    return max(0.5, value)


def beat_schedule() -> dict[str, dict[str, Any]]:
    tick = tick_seconds()
    return {
        "keyturn-dispatch-due": {
            "task": "keyturn.dispatch_due",
            "schedule": tick,
            # a tick nobody picked up in time is worthless: the next one does the same work
            "options": {"expires": max(tick * 2, 5.0)},
        }
    }
