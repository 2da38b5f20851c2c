"""The restart step: move consumers to the promoted value before the old one is retired.

The policy's strategy (``rotation/policy/restart.py``) names a runner; this step calls it with
the run's progress, a dict kept in ``runs.step_data`` across waits. Waiting never sleeps in a
worker: a runner returns ``wait_until`` and the step is asked again through
``next_attempt_at`` (a wait that has already ended goes on at once). Runners: ``none`` and
``waves`` here, ``acknowledge``, ``command`` and ``webhook`` in their own modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from rotation.policy.restart import RestartStrategy, WavesRestart, strategy_runner
from rotation.run.step import StepInput, StepResult

__all__ = ["SLOT_POLL", "Progress", "WaveOutcome", "no_restart", "restart", "run_waves"]

#: How soon a run waiting for one of the policy's restart slots asks again.
SLOT_POLL = timedelta(seconds=5)

#: What a runner keeps across waits (JSON: names, counters, ISO times; never a value).
Progress = dict[str, Any]


@dataclass(frozen=True)
class WaveOutcome:
    """A runner's answer: done (with a note), or ask again at ``wait_until``."""

    wait_until: datetime | None = None
    note: str | None = None


def wave_started(step: StepInput, progress: Progress) -> datetime:
    """When this strategy first ran for the run (its timeout counts from there)."""
    return datetime.fromisoformat(progress.setdefault("started", step.now.isoformat()))


def restart(step: StepInput) -> StepResult:
    """Run the policy's restart strategy, resuming from the progress recorded in ``step_data``."""
    spec = step.policy.restart
    progress: Progress = dict(step.step_data or {})
    outcome: WaveOutcome = strategy_runner(spec.strategy)(step, spec, progress)
    if outcome.wait_until is not None:
        return StepResult(wait_until=outcome.wait_until, step_data=progress, note=outcome.note)
    return StepResult(note=outcome.note, step_data={})


def no_restart(step: StepInput, spec: RestartStrategy, progress: Progress) -> WaveOutcome:
    """``none``: consumers re-read the secret themselves."""
    return WaveOutcome()


def run_waves(step: StepInput, spec: RestartStrategy, progress: Progress) -> WaveOutcome:
    """``waves``: each wave's strategy in order, holding one of the policy's restart slots.

    Each wave is its own resumable piece of the step: once one is done its progress is
    committed and the next one runs under a fresh lease, with a budget of its own."""
    assert isinstance(spec, WavesRestart)
    if not progress.get("slot"):
        if not step.services.claim_restart_slot(spec.concurrency):
            return WaveOutcome(
                wait_until=step.now + SLOT_POLL,
                note=f"waiting for a restart slot (concurrency {spec.concurrency})",
            )
        progress["slot"] = True
    notes: list[str] = list(progress.get("notes", ()))
    index = int(progress.get("wave", 0))
    while index < len(spec.waves):
        wave = spec.waves[index]
        current: Progress = progress.setdefault("current", {})
        outcome: WaveOutcome = strategy_runner(wave.strategy)(step, wave, current)
        if outcome.wait_until is not None:
            return outcome
        if outcome.note:
            notes.append(outcome.note)
        index += 1
        progress.update(wave=index, current={}, notes=notes)
        if index < len(spec.waves):  # commit this wave; the next one goes on at once
            return WaveOutcome(wait_until=step.now, note=f"wave {index} of {len(spec.waves)} done")
    return WaveOutcome(note="; ".join(notes) or None)
