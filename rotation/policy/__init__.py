"""Rotation policies: the schema of ``schedules/*.yaml`` and loading with file/line/field errors.

A file holds one policy mapping or ``policies: [...]``. A file with any error is refused whole
(no half-applied intent); other files still load. The format is described in
``schedules/README.md``.

The package, by concern: ``files`` (YAML with lines, :class:`PolicyError`), ``durations``,
``schedule_spec`` (schedule and window), ``targets`` (restart strategies and kind targets),
``model`` (:class:`Policy`) and ``loading`` (files, directories, each secret's policy).
"""

from __future__ import annotations

from rotation.durations import MAX_DURATION as MAX_DURATION
from rotation.durations import Duration as Duration
from rotation.durations import format_duration, parse_duration
from rotation.policy.files import PolicyError, PolicyFileError
from rotation.policy.loading import (
    PolicyConflictError,
    PolicySet,
    default_schedules_dir,
    load_policies,
    load_policy_file,
    load_policy_text,
    resolve_secret_policies,
)
from rotation.policy.loading import policy_files as policy_files
from rotation.policy.model import Policy
from rotation.policy.schedule_spec import DAYS, ScheduleSpec, WindowSpec
from rotation.policy.schedule_spec import cron_min_gap as cron_min_gap
from rotation.policy.targets import (
    KIND_TARGETS,
    RESTART_STRATEGIES,
    NoRestart,
    PostgresTarget,
    RandomTarget,
    RestartStrategy,
)

__all__ = [
    "DAYS",
    "KIND_TARGETS",
    "RESTART_STRATEGIES",
    "NoRestart",
    "Policy",
    "PolicyConflictError",
    "PolicyError",
    "PolicyFileError",
    "PolicySet",
    "PostgresTarget",
    "RandomTarget",
    "RestartStrategy",
    "ScheduleSpec",
    "WindowSpec",
    "default_schedules_dir",
    "format_duration",
    "load_policies",
    "load_policy_file",
    "load_policy_text",
    "parse_duration",
    "resolve_secret_policies",
]


# The richer restart strategies live in their own module and register themselves here.
from rotation.policy import restart as _restart_specs  # noqa: F401
