"""``command``: run argv lists in order, each with the strategy's timeout, in a minimal
environment (PATH, HOME, locale, the policy's ``pass_env`` and KEYTURN_SECRET/VERSION/RUN_ID/
EVENT), so a command that prints its environment cannot leak the worker's own credentials.
With ``run_as`` it runs as that user (uid, gid, groups), so it cannot read the worker's
environment through ``/proc/$PPID/environ`` either; without it, it runs as the worker and can.
``KEYTURN_EVENT`` is ``promoted``, or ``rolled_back`` when a rollback runs the same commands
(``KEYTURN_VERSION`` is then the version that is current again)."""

from __future__ import annotations

import logging
import os
import pwd
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from rotation.errors import RotationError, StepBudgetExceeded
from rotation.policy.restart import CommandRestart, RestartStrategy
from rotation.run.restart import Progress, WaveOutcome
from rotation.run.step import StepInput
from rotation.values import SecretValue, Stage

__all__ = ["run_commands"]

log = logging.getLogger("keyturn.restart")

_OUTPUT_CHARS = 2000
#: What a restart command inherits from the worker besides the policy's ``pass_env``.
_BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")


def run_commands(step: StepInput, spec: RestartStrategy, progress: Progress) -> WaveOutcome:
    """Each command in order; a failure or a timeout is retried (the step's attempts).

    Each starts only while this worker holds the run's lease, and runs at most its timeout or
    what is left of the step's budget, whichever ends first."""
    assert isinstance(spec, CommandRestart)
    passed = (*_BASE_ENV, *spec.pass_env)
    env = {name: os.environ[name] for name in passed if name in os.environ}
    move = step.announced()
    env.update(
        KEYTURN_SECRET=step.secret,
        KEYTURN_VERSION=move.version,
        KEYTURN_RUN_ID=str(step.run_id),
        KEYTURN_EVENT=move.event,
    )
    identity = _identity(spec.run_as)
    if identity is not None:
        env["HOME"] = identity.home
    scrub = _scrubber(step)
    configured = spec.timeout.total_seconds()
    for argv in spec.commands:
        step.guard.check()
        timeout = step.context.time_left(configured)
        try:
            done = subprocess.run(
                list(argv),
                env=env,
                capture_output=True,
                timeout=timeout,
                check=False,
                **(identity.popen_args() if identity is not None else {}),
            )
        except FileNotFoundError:
            raise RotationError(f"restart command not found: {argv[0]}", retryable=False) from None
        except PermissionError:
            raise RotationError(
                f"restart command {argv[0]} could not start"
                + (
                    f" as {spec.run_as} (the worker must run as root to switch users)"
                    if identity is not None
                    else " (permission denied)"
                ),
                retryable=False,
            ) from None
        except subprocess.TimeoutExpired:
            if timeout < configured:
                raise StepBudgetExceeded(
                    f"restart command {argv[0]} cut off after {timeout:.1f} s: the step's time "
                    "budget ended"
                ) from None
            raise RotationError(
                f"restart command {argv[0]} timed out after {spec.timeout}", retryable=True
            ) from None
        output = scrub((done.stdout + done.stderr).decode(errors="replace"))[-_OUTPUT_CHARS:]
        log.info(
            "restart command %s exited %s",
            argv[0],
            done.returncode,
            extra={"action": "restart.command", "secret": step.secret, "output": output},
        )
        if done.returncode != 0:
            raise RotationError(
                f"restart command {argv[0]} exited with status {done.returncode}", retryable=True
            )
    return WaveOutcome(note=f"{len(spec.commands)} restart command(s) succeeded")


@dataclass(frozen=True)
class _Identity:
    """The user a command runs as (``run_as``)."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str

    def popen_args(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": list(self.groups)}


def _identity(name: str | None) -> _Identity | None:
    """``run_as`` looked up now (the user may have gone since the policy was loaded)."""
    if name is None:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise RotationError(
            f"restart command user {name!r} (run_as) does not exist on this worker",
            retryable=False,
        ) from None
    groups = tuple(os.getgrouplist(name, entry.pw_gid))
    return _Identity(entry.pw_uid, entry.pw_gid, groups, entry.pw_dir)


def _scrubber(step: StepInput) -> Callable[[str], str]:
    """Blank out the current and previous values wherever a command printed them."""
    secrets: list[str] = []
    for stage in (Stage.CURRENT, Stage.PREVIOUS):
        try:
            secrets.extend(_strings(step.provider.read(step.secret, stage=stage).value))
        except Exception:  # nothing to scrub is better than failing the restart
            continue
    needles = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def scrub(text: str) -> str:
        for needle in needles:
            text = text.replace(needle, "[redacted]")
        return text

    return scrub


def _strings(value: SecretValue) -> Iterable[str]:
    if isinstance(value, str):
        yield value
        return
    for item in value.values():
        if isinstance(item, str):
            yield item
