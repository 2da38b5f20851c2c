"""Sending Keyturn tasks from outside a worker (the CLI, scripts), without running one."""

from __future__ import annotations

from worker.celery_app import app


def enqueue_advance(run_id: int, state: str) -> None:
    """Send ``keyturn.advance(run_id, state)``, as the worker does after a commit."""
    app.send_task("keyturn.advance", args=(run_id, state))


def send_rotate_now(secret: str, actor: str) -> None:
    """Send ``keyturn.rotate_now(secret, actor)``, as Flower's API or ``celery call`` would."""
    app.send_task("keyturn.rotate_now", args=(secret, actor))
