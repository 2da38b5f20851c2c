"""``KEYTURN_TASK_EVENTS``: one yes/no setting decides whether workers send Celery task events."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rotation.config import EngineSettings
from rotation.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("", True), ("1", True), ("yes", True), ("ON", True), ("0", False), ("false", False)],
)
def test_task_events_setting(raw: str, expected: bool) -> None:
    assert EngineSettings.from_env({"KEYTURN_TASK_EVENTS": raw}).task_events is expected


def test_a_bad_task_events_value_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match=r"KEYTURN_TASK_EVENTS must be 1 or 0.*'maybe'"):
        EngineSettings.from_env({"KEYTURN_TASK_EVENTS": "maybe"})


@pytest.mark.parametrize(("raw", "expected"), [("", "True True"), ("0", "False False")])
def test_the_worker_app_follows_the_setting(raw: str, expected: str) -> None:
    """The Celery app the workers run (``celery -A worker``), built in a fresh interpreter."""
    env = {**os.environ, "KEYTURN_TASK_EVENTS": raw}
    code = (
        "from worker.celery_app import app; c = app.conf; "
        "print(c.worker_send_task_events, c.task_send_sent_event)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == expected
