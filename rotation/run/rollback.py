"""The ``rollback`` step: a run that fails after promotion goes back without stranding anyone.

Consumers may already use the new value, so the rollback is announced like the promotion was,
and the abandoned credential is revoked only once they moved back. The run sits in
``rolling_back``; its ``step_data["rollback"]`` records why (``reason``), how it ends (``end``:
``failed`` or ``needs_attention``) and the phase reached, each phase a resumable piece:

1. ``restore``: the previous version becomes current again in the backend (idempotent: only if
   this run's version is current). A kind without ``dual_valid`` (a single user) is undone
   here too: its old credential works only once the target is set back.
2. ``announce``: the policy's restart strategy runs again for the move "version X is current
   again" (``StepInput.move``): the same acknowledge / command / webhook / waves, waiting
   across checks (``next_attempt_at``), its retryable failures retried for its time budget.
3. ``undo``: once announced and ``retire_after`` passed (the same grace as a retirement, for a
   kind that revokes), the rotator's ``undo`` revokes the abandoned credential (kinds with
   ``dual_valid``; the others were undone at ``restore``).

A failure the rollback cannot get past (a consumer cannot move back, the announcement times
out) stops it in ``needs_attention`` with the previous version current and the abandoned
credential still working: both work, so nobody is locked out while a human looks.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

from rotation.rotators.registry import capabilities_of
from rotation.run.restart import Progress, restart_deadline, run_strategy
from rotation.run.states import RunState
from rotation.run.step import Move, StepInput, StepResult

__all__ = ["ROLLBACK", "roll_back", "rollback_data", "rollback_deadline", "rollback_plan"]

#: The key of ``step_data`` that holds the rollback's own record.
ROLLBACK = "rollback"


def rollback_data(
    end: RunState, reason: str, retry_after: timedelta | None = None
) -> dict[str, Any]:
    """The ``step_data`` of a run entering ``rolling_back``."""
    meta: dict[str, Any] = {"end": end.value, "reason": reason, "phase": "restore"}
    if retry_after is not None:
        meta["retry_after"] = retry_after.total_seconds()
    return {ROLLBACK: meta}


def rollback_plan(step_data: dict[str, Any] | None) -> dict[str, Any]:
    """The rollback's record in ``step_data`` (empty for a run written by an older version)."""
    return dict((step_data or {}).get(ROLLBACK) or {})


def _progress(step: StepInput) -> Progress:
    return {k: v for k, v in (step.step_data or {}).items() if k != ROLLBACK}


def _dual_valid(step: StepInput) -> bool:
    return capabilities_of(step.policy.kind, step.policy.target).dual_valid


def rollback_deadline(step: StepInput) -> datetime | None:
    """Until when a retryable failure is retried: the restart strategy's budget while
    announcing, None (the policy's attempts) in the other phases."""
    if rollback_plan(step.step_data).get("phase") != "announce":
        return None
    return restart_deadline(step, step.policy.restart, _progress(step))


def roll_back(step: StepInput) -> StepResult:
    """Run the rollback's next phase (see the module docstring)."""
    meta = rollback_plan(step.step_data)
    phase = meta.get("phase", "restore")
    if phase == "restore":
        meta.update(phase="announce", restored=_restore(step))
        return StepResult(
            wait_until=step.now, step_data={ROLLBACK: meta}, note=meta["restored"], piece_done=True
        )
    if phase == "announce":
        progress = _progress(step)
        current = step.provider.read(step.secret).version_id
        moved = dataclasses.replace(step, move=Move(current, rollback_of=step.to_version))
        outcome = run_strategy(moved, step.policy.restart, progress)
        if outcome.wait_until is not None:
            return StepResult(
                wait_until=outcome.wait_until,
                step_data={**progress, ROLLBACK: meta},
                note=outcome.note,
                piece_done=outcome.piece_done,
            )
        # the same grace as a retirement, where the undo revokes a credential that works
        capabilities = capabilities_of(step.policy.kind, step.policy.target)
        revokes = capabilities.dual_valid and capabilities.revokes
        undo_at = step.now + (step.policy.retire_after if revokes else timedelta(0))
        announced = outcome.note or f"restart {step.policy.restart.strategy}: nothing to confirm"
        meta.update(phase="undo", announced=announced, undo_at=undo_at.isoformat())
        return StepResult(
            wait_until=undo_at, step_data={ROLLBACK: meta}, note=announced, piece_done=True
        )
    grace_ends = datetime.fromisoformat(str(meta.get("undo_at") or step.now.isoformat()))
    if step.now < grace_ends:
        return StepResult(wait_until=grace_ends)
    capabilities = capabilities_of(step.policy.kind, step.policy.target)
    if capabilities.dual_valid:
        step.guard.check()
        step.rotator.undo(step.context)
        undone = (
            "the abandoned credential was revoked"
            if capabilities.revokes
            else "the target was undone (this kind revokes nothing)"
        )
    else:
        undone = "the target was set back before the announcement"
    return StepResult(
        note=f"rolled back: {meta.get('restored')}; {meta.get('announced')}; {undone}"
    )


def _restore(step: StepInput) -> str:
    """Make the previous version current again (and, for a kind whose two credentials never
    both work, the target accept it)."""
    if step.provider.read(step.secret).token == step.token:
        step.guard.check()
        step.provider.rollback(step.secret, token=step.token)
        restored = "the previous version is current again"
    else:
        restored = "the previous version was already current"
    if not _dual_valid(step):
        step.guard.check()
        step.rotator.undo(step.context)
        restored += " and the target accepts it again"
    return restored
