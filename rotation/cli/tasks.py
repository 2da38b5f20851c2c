"""Sending tasks to the workers by name, through a Celery app built from the settings.

The CLI is a shell like ``worker/``: it may use Celery to send messages, never import ``worker``
(which would load the workers' task code and settings into an operator's process).
"""

from __future__ import annotations

import threading

from celery import Celery

from rotation.config import EngineSettings
from rotation.scheduler.tasks import ADVANCE

__all__ = ["send_advance"]

_app: Celery | None = None
_lock = threading.Lock()


def _client() -> Celery:
    global _app
    with _lock:
        if _app is None:
            settings = EngineSettings.from_env()
            _app = Celery("keyturn-cli", broker=settings.broker_url, set_as_current=False)
            _app.conf.update(
                task_default_queue=settings.queue,
                task_serializer="json",
                accept_content=["json"],
                broker_connection_retry_on_startup=True,
            )
        return _app


def send_advance(run_id: int, state: str, priority: int | None = None) -> None:
    """Send ``keyturn.advance(run_id, state)``, as a worker does after a commit."""
    _client().send_task(ADVANCE, args=(run_id, state), priority=priority)
