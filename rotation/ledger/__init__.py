"""The ledger: policies, schedules, runs and their events, in Postgres (or SQLite when embedded)."""

from __future__ import annotations

from rotation.ledger.db import Ledger, database_url
from rotation.ledger.models import Base, PolicyRow, Run, RunEvent, Schedule

__all__ = ["Base", "Ledger", "PolicyRow", "Run", "RunEvent", "Schedule", "database_url"]
