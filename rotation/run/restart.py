"""The restart step: move consumers to the promoted value before the old one is retired.

Strategies (specs in rotation/policy/restart.py): ``none``; ``acknowledge`` (publish, then wait for
every live consumer's acknowledgement); ``command`` (run argv lists with a timeout); ``webhook``
(POST, HMAC-SHA256 signed); ``waves`` (several in order, at most ``concurrency`` runs of the
policy restarting at once). Waiting never sleeps in a worker: the step returns ``wait_until`` and
is asked again through ``next_attempt_at``; progress across waits lives in ``runs.step_data``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from rotation.errors import RotationError
from rotation.policy import RestartStrategy
from rotation.policy.restart import AcknowledgeRestart, CommandRestart, WavesRestart, WebhookRestart
from rotation.rollout import Announcement
from rotation.run.step import StepInput, StepResult
from rotation.values import SecretValue, Stage

__all__ = ["ACK_POLL", "ConsumersFailed", "restart"]

log = logging.getLogger("keyturn.restart")

#: How soon an acknowledge wait asks again (the dispatcher tick bounds it from below).
ACK_POLL = timedelta(seconds=1)
SLOT_POLL = timedelta(seconds=5)
_OUTPUT_CHARS = 2000
#: What a restart command inherits from the worker besides the policy's ``pass_env``.
_BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")


class ConsumersFailed(RotationError):
    """A consumer could not move to the new value; the promotion is rolled back."""

    retryable = False


def _error(message: str, *, retryable: bool) -> RotationError:
    exc = RotationError(message)
    exc.retryable = retryable  # type: ignore[attr-defined]
    return exc


@dataclass(frozen=True)
class _Wave:
    wait_until: datetime | None = None
    note: str | None = None


def restart(step: StepInput) -> StepResult:
    """Run the policy's restart strategy, resuming at the wave recorded in ``step_data``."""
    spec = step.policy.restart
    waves: tuple[RestartStrategy, ...] = spec.waves if isinstance(spec, WavesRestart) else (spec,)
    data: dict[str, Any] = dict(step.step_data or {})
    if isinstance(spec, WavesRestart) and not data.get("slot"):
        if not step.services.claim_restart_slot(spec.concurrency):
            return StepResult(
                wait_until=step.now + SLOT_POLL,
                step_data=data,
                note=f"waiting for a restart slot (concurrency {spec.concurrency})",
            )
        data["slot"] = True
    index = int(data.get("wave", 0))
    notes: list[str] = []
    while index < len(waves):
        started = datetime.fromisoformat(data.setdefault("wave_started", step.now.isoformat()))
        outcome = _RUNNERS[waves[index].strategy](step, waves[index], started)
        if outcome.wait_until is not None:
            return StepResult(wait_until=outcome.wait_until, step_data=data, note=outcome.note)
        if outcome.note:
            notes.append(outcome.note)
        index += 1
        data = {**data, "wave": index}
        data.pop("wave_started", None)
    return StepResult(note="; ".join(notes) or None, step_data={})


def _none(step: StepInput, spec: RestartStrategy, started: datetime) -> _Wave:
    return _Wave()


def _acknowledge(step: StepInput, spec: RestartStrategy, started: datetime) -> _Wave:
    assert isinstance(spec, AcknowledgeRestart)
    version = step.to_version
    if version is None:
        raise _error("no promoted version recorded for this run", retryable=False)
    bus = step.services.bus()
    bus.publish(Announcement(step.secret, version, step.run_id))
    live = bus.live_consumers(step.secret)
    acks = bus.acks(step.secret, version)
    failed = {c: o for c, o in acks.items() if o != "ok"}
    if failed:
        who = ", ".join(f"{c} ({o})" for c, o in sorted(failed.items()))
        raise ConsumersFailed(f"consumers could not move to version {version}: {who}")
    missing = [c for c in live if c not in acks]
    if not missing:
        bus.forget_acks(step.secret, version)
        return _Wave(note=f"{len(live)} consumer(s) acknowledged version {version}")
    if step.now >= started + spec.timeout:
        if spec.on_timeout == "proceed":
            bus.forget_acks(step.secret, version)
            return _Wave(note=f"proceeding without acknowledgement from {', '.join(missing)}")
        raise ConsumersFailed(
            f"timed out after {spec.timeout} waiting for {', '.join(missing)} to acknowledge "
            f"version {version}"
        )
    return _Wave(
        wait_until=step.now + ACK_POLL,
        note=f"waiting for {len(missing)} of {len(live)} consumer(s) to acknowledge",
    )


def _command(step: StepInput, spec: RestartStrategy, started: datetime) -> _Wave:
    assert isinstance(spec, CommandRestart)
    passed = (*_BASE_ENV, *spec.pass_env)
    env = {name: os.environ[name] for name in passed if name in os.environ}
    env.update(
        KEYTURN_SECRET=step.secret,
        KEYTURN_VERSION=step.to_version or "",
        KEYTURN_RUN_ID=str(step.run_id),
    )
    scrub = _scrubber(step)
    for argv in spec.commands:
        try:
            done = subprocess.run(
                list(argv),
                env=env,
                capture_output=True,
                timeout=spec.timeout.total_seconds(),
                check=False,
            )
        except FileNotFoundError:
            raise _error(f"restart command not found: {argv[0]}", retryable=False) from None
        except subprocess.TimeoutExpired:
            raise _error(
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
            raise _error(
                f"restart command {argv[0]} exited with status {done.returncode}", retryable=True
            )
    return _Wave(note=f"{len(spec.commands)} restart command(s) succeeded")


def _webhook(step: StepInput, spec: RestartStrategy, started: datetime) -> _Wave:
    assert isinstance(spec, WebhookRestart)
    key = step.services.read_secret(spec.hmac_secret)
    if not isinstance(key, str):
        raise _error(f"the HMAC key secret {spec.hmac_secret} must be a string", retryable=False)
    body = json.dumps(
        {
            "event": "secret.promoted",
            "secret": step.secret,
            "version": step.to_version,
            "run_id": step.run_id,
            "policy": step.policy.name,
        },
        sort_keys=True,
    ).encode()
    signature = hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        spec.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-Keyturn-Signature": f"sha256={signature}",
            "User-Agent": "keyturn",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=spec.timeout.total_seconds()) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        raise _error(
            f"restart webhook unreachable ({type(exc).__name__})", retryable=True
        ) from None
    if not 200 <= status < 300:
        raise _error(f"restart webhook answered HTTP {status}", retryable=True)
    return _Wave(note=f"webhook answered HTTP {status}")


_RUNNERS: dict[str, Callable[[StepInput, RestartStrategy, datetime], _Wave]] = {
    "none": _none,
    "acknowledge": _acknowledge,
    "command": _command,
    "webhook": _webhook,
}


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
