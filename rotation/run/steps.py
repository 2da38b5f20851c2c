"""The body of each step of a rotation run. Each is idempotent: re-run after a crash, it finds
its effect already there and returns early (AWS's rotation contract, keyed by the run's token)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from rotation.errors import SecretNotFound, VersionConflict
from rotation.run.restart import restart
from rotation.run.rollback import roll_back
from rotation.run.states import RunState
from rotation.run.step import StepInput, StepResult
from rotation.values import Stage

__all__ = ["INSTANT", "STEPS", "StepInput", "StepResult", "rollback_where_safe"]


def create(step: StepInput) -> StepResult:
    """Store a new value as PENDING under the run's token (persist before apply)."""
    current = step.provider.read(step.secret)
    try:
        pending = step.provider.read(step.secret, stage=Stage.PENDING)
        if pending.token == step.token:
            # staged by an earlier try whose commit never happened: the version it replaces is
            # still current (the retire step's guard needs it)
            return StepResult(from_version=current.version_id, note="pending already staged")
    except SecretNotFound:
        pass
    value = step.rotator.create(step.context, current.value)
    step.guard.check()
    try:
        step.provider.stage_pending(step.secret, value, token=step.token)
    except VersionConflict:
        # our token already holds a pending value (a crash after staging): keep that one
        if step.provider.read(step.secret, stage=Stage.PENDING).token != step.token:
            raise
    return StepResult(from_version=current.version_id)


def apply(step: StepInput) -> StepResult:
    step.guard.check()
    step.rotator.apply(step.context)
    return StepResult()


def test(step: StepInput) -> StepResult:
    step.guard.check()
    step.rotator.test(step.context)
    return StepResult()


def promote(step: StepInput) -> StepResult:
    """Pending becomes current; the old value stays valid as PREVIOUS (dual-publish)."""
    step.guard.check()
    return StepResult(to_version=step.provider.promote(step.secret, token=step.token))


def retire(step: StepInput) -> StepResult:
    """Revoke the old credential once the policy's grace has passed since the restart."""
    grace_ends = step.state_entered_at + step.policy.retire_after
    if step.now < grace_ends:
        return StepResult(wait_until=grace_ends)
    previous = step.context.previous()
    if previous is None:
        return StepResult(note="no previous version to retire")
    if step.from_version is not None and previous.version_id != step.from_version:
        return StepResult(note="previous version changed since the run started; left as is")
    step.guard.check()
    step.rotator.retire(step.context, previous.value)
    return StepResult()


def finish(step: StepInput) -> StepResult:
    """Nothing outside the ledger: the run ends (the engine reschedules the secret)."""
    return StepResult()


#: The step that leaves each state.
STEPS: dict[RunState, tuple[str, Callable[[StepInput], StepResult]]] = {
    RunState.PENDING: ("create", create),
    RunState.CREATED: ("apply", apply),
    RunState.APPLIED: ("test", test),
    RunState.TESTED: ("promote", promote),
    RunState.PROMOTED: ("restart", restart),
    RunState.RESTARTED: ("retire", retire),
    RunState.RETIRED: ("finish", finish),
    # after promotion, a failure goes back through here (rotation/run/rollback.py)
    RunState.ROLLING_BACK: ("rollback", roll_back),
}

#: States whose step does nothing outside the ledger (``finish``): a worker going on with a
#: run (``Engine.advance(follow=True)``) commits it with the step before, in one transaction.
INSTANT = frozenset({RunState.RETIRED})


def rollback_where_safe(step: StepInput, state: RunState) -> str:
    """Put the backend and target back on the old value at once, where that is still safe.

    Before promotion the rotator's undo runs first (while the pending value is still readable:
    a single user logs in with it), then the pending value is discarded. After promotion (and
    before the retire step started) the previous version is re-promoted and undone at once:
    the engine does that only through ``rolling_back``, which tells consumers first; this is
    for an operator's ``resolve --abandon``. From the retire step on, the new value is current
    and working, and the old one may be partly revoked: nothing is undone."""
    if state in (RunState.RESTARTED, RunState.RETIRED):
        return "no rollback: the new value is current and the old one may be revoked"
    current = step.provider.read(step.secret)
    if current.token == step.token:
        step.guard.check()
        step.provider.rollback(step.secret, token=step.token)
        step.guard.check()
        step.rotator.undo(step.context)
        return "rolled back: the previous version is current again"
    if state is not RunState.PENDING:
        step.guard.check()
        step.rotator.undo(step.context)  # while the pending value is still readable
    step.guard.check()
    step.provider.discard_pending(step.secret, token=step.token)
    if state in (RunState.PROMOTED, RunState.ROLLING_BACK):
        return "rolled back: the previous version was current already; the target was undone"
    return "rolled back: the pending value was discarded"


#: How long a failed (rolled back) run waits before the schedule tries the secret again.
FAILED_RETRY_DELAY = timedelta(hours=1)
