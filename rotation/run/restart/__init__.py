"""The restart step: move consumers to the promoted value before the old one is retired.

The policy's strategy (``rotation/policy/restart.py``) names a runner; this step calls it with
the run's progress, a dict kept in ``runs.step_data`` across waits. Waiting never sleeps in a
worker: a runner returns ``wait_until`` and the step is asked again through
``next_attempt_at`` (a wait that has already ended goes on at once). Runners: ``none`` and
``waves`` here, ``acknowledge``, ``command`` and ``webhook`` in their own modules. A rollback
runs the same strategy to announce that the previous version is current again
(``StepInput.move``; rotation/run/rollback.py).

The step's budget is time, not attempts (:func:`restart_deadline`): a retryable failure (Redis
away, a deploy hook answering 503) is retried until the strategy's ``retry_budget`` (the
``timeout`` of ``acknowledge``, ``retry_for`` of ``command`` and ``webhook``) has passed since
it started, each wave of ``waves`` on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from rotation.policy.restart import RestartStrategy, WavesRestart, strategy_runner
from rotation.run.step import StepInput, StepResult

__all__ = [
    "SLOT_POLL",
    "Progress",
    "WaveOutcome",
    "no_restart",
    "restart",
    "restart_deadline",
    "run_strategy",
    "run_waves",
]

#: How soon a run waiting for one of the policy's restart slots asks again.
SLOT_POLL = timedelta(seconds=5)

#: What a runner keeps across waits (JSON: names, counters, ISO times; never a value).
Progress = dict[str, Any]


@dataclass(frozen=True)
class WaveOutcome:
    """A runner's answer: done (with a note), or ask again at ``wait_until``."""

    wait_until: datetime | None = None
    note: str | None = None
    #: A wave is done; the next one starts with fresh attempts.
    piece_done: bool = False


def wave_started(step: StepInput, progress: Progress) -> datetime:
    """When this strategy first ran for the run (its timeout counts from there)."""
    return datetime.fromisoformat(progress.setdefault("started", step.now.isoformat()))


def run_strategy(step: StepInput, spec: RestartStrategy, progress: Progress) -> WaveOutcome:
    """Run ``spec`` for ``step.announced()``, updating ``progress`` in place."""
    outcome: WaveOutcome = strategy_runner(spec.strategy)(step, spec, progress)
    return outcome


def restart(step: StepInput) -> StepResult:
    """Run the policy's restart strategy, resuming from the progress recorded in ``step_data``."""
    progress: Progress = dict(step.step_data or {})
    outcome = run_strategy(step, step.policy.restart, progress)
    if outcome.wait_until is not None:
        return StepResult(
            wait_until=outcome.wait_until,
            step_data=progress,
            note=outcome.note,
            piece_done=outcome.piece_done,
        )
    return StepResult(note=outcome.note, step_data={})


def restart_deadline(step: StepInput, spec: RestartStrategy, progress: Progress) -> datetime | None:
    """Until when a retryable failure of ``spec`` (the wave in progress, for ``waves``) is
    retried; None: by the policy's ``max_attempts`` instead (a plug-in strategy)."""
    if isinstance(spec, WavesRestart):
        index = int(progress.get("wave", 0))
        if index >= len(spec.waves):
            return None
        return restart_deadline(step, spec.waves[index], progress.get("current") or {})
    budget = spec.retry_budget
    if budget is None:
        return None
    started = progress.get("started")
    since = datetime.fromisoformat(started) if started else step.state_entered_at
    return since + budget


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
        # the next wave's budget counts from now, even if its first try fails
        progress.update(wave=index, current={"started": step.now.isoformat()}, notes=notes)
        if index < len(spec.waves):  # commit this wave; the next one goes on at once
            return WaveOutcome(
                wait_until=step.now,
                note=f"wave {index} of {len(spec.waves)} done",
                piece_done=True,
            )
    return WaveOutcome(note="; ".join(notes) or None)
