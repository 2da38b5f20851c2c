"""The Celery shell over ``rotation``: ``celery -A worker worker|beat|flower``."""

from __future__ import annotations

from worker.celery_app import app

__all__ = ["app"]
