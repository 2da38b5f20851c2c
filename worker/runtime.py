"""One Runtime, Engine and Dispatcher per worker process, built lazily (after fork)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from rotation.config import EngineSettings
from rotation.ledger.db import Ledger
from rotation.policy import default_schedules_dir
from rotation.run.engine import Engine, PauseHook
from rotation.run.runtime import Runtime
from rotation.scheduler.dispatcher import Dispatcher

_lock = threading.Lock()
_state: dict[str, object] = {}


def _pause_hook() -> PauseHook | None:
    """Test-only: ``KEYTURN_TEST_PAUSE=step:phase`` parks the worker there; the file
    ``KEYTURN_TEST_PAUSE_FILE`` marks it (with the process id) and removing it lets it go on."""
    spec = os.environ.get("KEYTURN_TEST_PAUSE")
    if not spec:
        return None
    marker = Path(os.environ.get("KEYTURN_TEST_PAUSE_FILE", "keyturn-paused"))

    def hook(step: str, phase: str) -> None:
        if f"{step}:{phase}" == spec:
            marker.write_text(f"{os.getpid()}\n")
            deadline = time.monotonic() + 600  # bounded: a test kills us long before
            while time.monotonic() < deadline and marker.exists():
                time.sleep(0.2)

    return hook


def _build() -> None:
    if _state.get("pid") == os.getpid():
        return
    settings = EngineSettings.from_env()
    rt = Runtime(Ledger())
    _state.update(
        pid=os.getpid(),
        runtime=rt,
        engine=Engine(
            rt,
            lease=settings.lease,
            throttled_max=settings.throttled_max,
            pause_hook=_pause_hook(),
        ),
        dispatcher=Dispatcher(
            rt,
            default_schedules_dir(),
            redeliver_after=settings.redeliver,
            removal_grace=settings.removal_grace,
        ),
    )


def runtime() -> Runtime:
    with _lock:
        _build()
        return _state["runtime"]  # type: ignore[return-value]


def engine() -> Engine:
    with _lock:
        _build()
        return _state["engine"]  # type: ignore[return-value]


def dispatcher() -> Dispatcher:
    with _lock:
        _build()
        return _state["dispatcher"]  # type: ignore[return-value]
