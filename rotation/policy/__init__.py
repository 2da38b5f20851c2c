"""Rotation policies: the schema of ``schedules/*.yaml`` and loading with file/line/field errors.

A file holds one policy mapping or ``policies: [...]``. A file with any error is refused whole
(no half-applied intent); other files still load. The format is described in
``schedules/README.md``.

The package, by concern: ``files`` (YAML with lines), ``schedule_spec`` (schedule and window),
``restart`` (restart strategies, registered with their runners), ``model`` (:class:`Policy`; a
kind's ``target`` is validated with the schema its rotator registered), ``loading`` (files,
directories, each secret's policy) and ``due`` (when a secret is next due).
"""

from __future__ import annotations

from rotation.policy.loading import (
    PolicySet,
    default_schedules_dir,
    load_policies,
    load_policy_file,
    load_policy_text,
    policy_files,
    resolve_secret_policies,
)
from rotation.policy.model import Policy
from rotation.policy.restart import (
    RESTART_STRATEGIES,
    NoRestart,
    RestartStrategy,
    register_restart_strategy,
)
from rotation.policy.schedule_spec import DAYS, ScheduleSpec, WindowSpec, cron_min_gap

__all__ = [
    "DAYS",
    "RESTART_STRATEGIES",
    "NoRestart",
    "Policy",
    "PolicySet",
    "RestartStrategy",
    "ScheduleSpec",
    "WindowSpec",
    "cron_min_gap",
    "default_schedules_dir",
    "load_policies",
    "load_policy_file",
    "load_policy_text",
    "policy_files",
    "register_restart_strategy",
    "resolve_secret_policies",
]
