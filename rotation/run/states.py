"""The states of a rotation run and the step that leaves each one (see docs/rotation-run.md)."""

from __future__ import annotations

import enum

__all__ = ["ACTIVE_STATES", "FINAL_STATES", "NEXT_STATE", "RunState"]


class RunState(enum.StrEnum):
    """Where a rotation run stands. Each non-final state names the step that runs next."""

    #: Created by the dispatcher or a manual trigger; nothing touched yet.
    PENDING = "pending"
    #: The new value is stored in the backend as PENDING (never visible to plain readers).
    CREATED = "created"
    #: The target (database, issuer) accepts the new value; the old one still works.
    APPLIED = "applied"
    #: A login/verification with the new value succeeded.
    TESTED = "tested"
    #: current = new, previous = old; both valid.
    PROMOTED = "promoted"
    #: Consumers reloaded or acknowledged (per the policy's restart strategy).
    RESTARTED = "restarted"
    #: The old credential was revoked after the policy's grace.
    RETIRED = "retired"
    #: A step failed after promotion: the previous version is made current again, announced
    #: through the restart strategy, and only then is the new credential revoked.
    ROLLING_BACK = "rolling_back"
    #: Done.
    SUCCEEDED = "succeeded"
    #: Stopped on an error that retrying cannot fix; rolled back where safe.
    FAILED = "failed"
    #: Attempts exhausted (or a rollback failed): a human must look.
    NEEDS_ATTENTION = "needs_attention"


#: The state each step moves a run to.
NEXT_STATE: dict[RunState, RunState] = {
    RunState.PENDING: RunState.CREATED,
    RunState.CREATED: RunState.APPLIED,
    RunState.APPLIED: RunState.TESTED,
    RunState.TESTED: RunState.PROMOTED,
    RunState.PROMOTED: RunState.RESTARTED,
    RunState.RESTARTED: RunState.RETIRED,
    RunState.RETIRED: RunState.SUCCEEDED,
}

#: States no step leaves.
FINAL_STATES = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.NEEDS_ATTENTION})
#: States that hold the secret's single active-run slot (needs_attention blocks new runs).
ACTIVE_STATES = frozenset(set(RunState) - {RunState.SUCCEEDED, RunState.FAILED})
