"""``advance(run_id)``: take the run's lease, run exactly one step, commit the transition.

The lease is a compare-and-set UPDATE, so a redelivered or duplicated message for a run whose
lease is live, whose state moved on, or whose wait has not ended does nothing. The caller (a
Celery task, or a test) enqueues the next step only after this returns, i.e. after commit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from rotation.access.audit import append as audit_append
from rotation.access.audit import transition_event
from rotation.ledger.locks import RESTART_SLOTS, xact_lock
from rotation.ledger.models import PolicyRow, Run, RunEvent, Schedule
from rotation.policy import Policy
from rotation.policy.due import next_due
from rotation.providers.base import Provider
from rotation.rotators.base import RotationContext
from rotation.run.notify import Notice, Notifier
from rotation.run.retry import ExponentialBackoff, is_retryable
from rotation.run.runtime import Runtime
from rotation.run.states import FINAL_STATES, NEXT_STATE, RunState
from rotation.run.steps import FAILED_RETRY_DELAY, STEPS, StepInput, StepResult, rollback_where_safe
from rotation.values import SecretValue

if TYPE_CHECKING:
    from rotation.rollout import RolloutBus

__all__ = ["Advance", "Engine", "PauseHook"]

log = logging.getLogger("keyturn.engine")

#: Called as ``hook(step_name, "before" | "after")`` around each step; tests use it to pause a
#: worker at a step boundary and kill it there.
PauseHook = Callable[[str, str], None]

_MAX_ERROR_CHARS = 1000
#: Pauses after each failed rollback try (at most ~2 s in all, well inside a lease).
ROLLBACK_PAUSES = (0.2, 0.5, 1.0, 0.0)


@dataclass(frozen=True)
class Advance:
    """What happened, and whether the caller should enqueue ``advance(run_id, state)`` now."""

    run_id: int
    state: RunState | None
    executed: bool
    enqueue: bool = False
    wait_until: datetime | None = None


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."


class Engine:
    """Advances rotation runs one step at a time."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        lease: timedelta = timedelta(minutes=5),
        backoff: ExponentialBackoff | None = None,
        pause_hook: PauseHook | None = None,
    ) -> None:
        self.runtime = runtime
        self.lease = lease
        self.backoff = backoff or ExponentialBackoff()
        self.pause_hook = pause_hook
        self.notify = Notifier(runtime.environ)

    @property
    def _me(self) -> str:
        return self.runtime.worker_id

    # --- leasing ---------------------------------------------------------------------------

    def _take_lease(self, run_id: int, expected: RunState | None, now: datetime) -> bool:
        conditions = [
            Run.id == run_id,
            Run.state.not_in([s.value for s in FINAL_STATES]),
            or_(Run.lease_expires_at.is_(None), Run.lease_expires_at < now),
            or_(Run.next_attempt_at.is_(None), Run.next_attempt_at <= now),
        ]
        if expected is not None:
            conditions.append(Run.state == expected.value)
        with self.runtime.ledger.transaction() as session:
            taken = session.execute(
                update(Run)
                .where(*conditions)
                .values(
                    lease_owner=self._me,
                    lease_expires_at=now + self.lease,
                    attempt=Run.attempt + 1,
                    updated_at=now,
                )
                .returning(Run.id)
            ).first()
        return taken is not None

    # --- the one entry point ---------------------------------------------------------------

    def advance(self, run_id: int, expected: RunState | str | None = None) -> Advance:
        """Run the next step of ``run_id`` if this worker can take its lease."""
        expected_state = RunState(expected) if expected is not None else None
        now = self.runtime.clock()
        if not self._take_lease(run_id, expected_state, now):
            return Advance(run_id, expected_state, executed=False)
        with self.runtime.ledger.sessions() as session:
            run = session.get(Run, run_id)
            assert run is not None
            policy_row = session.get(PolicyRow, run.policy_name)
        state = RunState(run.state)
        step_name, _ = STEPS[state]
        if policy_row is None:
            message = f"policy {run.policy_name!r} no longer exists"
            return self._end(run, RunState.NEEDS_ATTENTION, step_name, None, message)
        policy = self.runtime.policy(policy_row)
        step = self.step_input(run, policy, now)

        if run.attempt > run.max_attempts:
            message = f"attempts exhausted at step {step_name} ({run.max_attempts})"
            return self._give_up(run, state, step_name, step, message)

        self._pause(step_name, "before")
        try:
            result = STEPS[state][1](step)
        except Exception as exc:
            return self._on_error(run, state, step_name, step, exc)
        self._pause(step_name, "after")
        if result.wait_until is not None:
            return self._wait(run, state, step_name, result)
        return self._transition(run, state, step_name, policy, result)

    def _pause(self, step_name: str, phase: str) -> None:
        if self.pause_hook is not None:
            self.pause_hook(step_name, phase)

    def step_input(self, run: Run, policy: Policy, now: datetime) -> StepInput:
        """What the step leaving ``run``'s state gets (also used to roll a run back by hand)."""
        provider = self.runtime.provider(run.provider)
        context = RotationContext(
            secret=run.secret,
            provider=provider,
            token=run.token,
            generator=policy.generator,
            target=policy.target_settings(),
            read_secret=lambda name: provider.read(name).value,
        )
        return StepInput(
            run_id=run.id,
            secret=run.secret,
            token=run.token,
            policy=policy,
            provider=provider,
            rotator=self.runtime.rotator(policy.kind),
            context=context,
            from_version=run.from_version,
            to_version=run.to_version,
            state_entered_at=run.state_entered_at,
            now=now,
            services=_RunServices(self, run, provider),
            step_data=dict(run.step_data or {}),
        )

    # --- commits (each fenced by our lease) ------------------------------------------------

    def _commit(
        self,
        run: Run,
        *,
        step_name: str,
        to_state: RunState,
        outcome: str,
        message: str | None,
        values: dict[str, object],
        schedule_update: Callable[[Session, datetime], None] | None = None,
    ) -> bool:
        now = self.runtime.clock()
        with self.runtime.ledger.transaction() as session:
            changed = session.execute(
                update(Run)
                .where(Run.id == run.id, Run.lease_owner == self._me, Run.state == run.state)
                .values(lease_owner=None, lease_expires_at=None, updated_at=now, **values)
                .returning(Run.id)
            ).first()
            if changed is None:
                log.warning(
                    "lease lost before commit; the step will be redone by the lease holder",
                    extra={"action": "run.lease_lost", "run_id": run.id, "step": step_name},
                )
                return False
            session.add(
                RunEvent(
                    run_id=run.id,
                    at=now,
                    step=step_name,
                    from_state=run.state,
                    to_state=to_state.value,
                    outcome=outcome,
                    attempt=run.attempt,
                    worker=self._me,
                    message=message,
                )
            )
            if schedule_update is not None:
                schedule_update(session, now)
            if to_state.value != run.state:  # audit: last, so the chain's lock is held briefly
                event = transition_event(
                    run, to_state.value, step_name, outcome, message, now, values
                )
                audit_append(session, event)
        log.info(
            "run %s %s: %s -> %s (%s)",
            run.id,
            step_name,
            run.state,
            to_state.value,
            outcome,
            extra={
                "action": f"run.{outcome}",
                "run_id": run.id,
                "secret": run.secret,
                "step": step_name,
                "state": to_state.value,
            },
        )
        return True

    def _transition(
        self, run: Run, state: RunState, step_name: str, policy: Policy, result: StepResult
    ) -> Advance:
        new_state = NEXT_STATE[state]
        now = self.runtime.clock()
        values: dict[str, object] = {
            "state": new_state.value,
            "attempt": 0,
            "state_entered_at": now,
            "next_attempt_at": None,
            "enqueued_at": now,
            "last_error": None,
            "step_data": None,
        }
        if result.from_version is not None:
            values["from_version"] = result.from_version
        if result.to_version is not None:
            values["to_version"] = result.to_version
        schedule_update = None
        if new_state is RunState.SUCCEEDED:
            values["finished_at"] = now
            values["enqueued_at"] = None
            schedule_update = self._reschedule(run, policy, rotated=True)
        committed = self._commit(
            run,
            step_name=step_name,
            to_state=new_state,
            outcome="ok",
            message=result.note,
            values=values,
            schedule_update=schedule_update,
        )
        if committed and new_state is RunState.SUCCEEDED:
            self.notify(Notice(run.id, run.secret, run.policy_name, new_state.value, result.note))
        return Advance(
            run.id,
            new_state,
            executed=True,
            enqueue=committed and new_state not in FINAL_STATES,
        )

    def _wait(self, run: Run, state: RunState, step_name: str, result: StepResult) -> Advance:
        # a wait is not a failed try: give the attempt back
        values: dict[str, object] = {
            "attempt": run.attempt - 1,
            "next_attempt_at": result.wait_until,
            "enqueued_at": None,
        }
        if result.step_data is not None:
            values["step_data"] = result.step_data
        self._commit(
            run,
            step_name=step_name,
            to_state=state,
            outcome="wait",
            message=result.note or f"waiting until {result.wait_until:%Y-%m-%dT%H:%M:%SZ}",
            values=values,
        )
        return Advance(run.id, state, executed=True, wait_until=result.wait_until)

    def _on_error(
        self, run: Run, state: RunState, step_name: str, step: StepInput, exc: Exception
    ) -> Advance:
        error = _describe(exc)
        log.warning(
            "run %s step %s failed: %s",
            run.id,
            step_name,
            error,
            extra={"action": "run.step_failed", "run_id": run.id, "step": step_name},
        )
        if not is_retryable(exc):
            return self._fail(run, state, step_name, step, error)
        if run.attempt >= run.max_attempts:
            return self._give_up(run, state, step_name, step, error)
        wait_until = self.runtime.clock() + self.backoff.delay(run.attempt)
        self._commit(
            run,
            step_name=step_name,
            to_state=state,
            outcome="retry",
            message=error,
            values={"next_attempt_at": wait_until, "enqueued_at": None, "last_error": error},
        )
        return Advance(run.id, state, executed=True, wait_until=wait_until)

    def _rollback(self, state: RunState, step: StepInput) -> tuple[bool, str]:
        """Roll back where safe, trying a flaky backend a few times (each part is idempotent);
        a short bounded pause beats leaving a pending value behind for a human."""
        error: Exception | None = None
        for pause in ROLLBACK_PAUSES:
            try:
                return True, rollback_where_safe(step, state)
            except Exception as exc:
                error = exc
                if not is_retryable(exc):
                    break
                time.sleep(pause)
        assert error is not None
        return False, f"rollback incomplete ({_describe(error)})"

    def _fail(
        self, run: Run, state: RunState, step_name: str, step: StepInput, error: str
    ) -> Advance:
        rolled_back, note = self._rollback(state, step)
        final = RunState.FAILED if rolled_back else RunState.NEEDS_ATTENTION
        return self._end(run, final, step_name, step.policy, f"{error}; {note}")

    def _give_up(
        self, run: Run, state: RunState, step_name: str, step: StepInput, error: str
    ) -> Advance:
        _, note = self._rollback(state, step)
        return self._end(run, RunState.NEEDS_ATTENTION, step_name, step.policy, f"{error}; {note}")

    def _end(
        self, run: Run, final: RunState, step_name: str, policy: Policy | None, message: str
    ) -> Advance:
        now = self.runtime.clock()
        committed = self._commit(
            run,
            step_name=step_name,
            to_state=final,
            outcome="failed",
            message=message,
            values={
                "state": final.value,
                "state_entered_at": now,
                "finished_at": now,
                "last_error": message[:_MAX_ERROR_CHARS],
                "next_attempt_at": None,
                "enqueued_at": None,
            },
            # needs_attention keeps the schedule blocked until a human resolves the run
            schedule_update=self._reschedule(run, policy, rotated=False)
            if final is RunState.FAILED and policy is not None
            else None,
        )
        if committed:
            self.notify(Notice(run.id, run.secret, run.policy_name, final.value, message))
        return Advance(run.id, final, executed=True)

    def _reschedule(
        self, run: Run, policy: Policy, *, rotated: bool
    ) -> Callable[[Session, datetime], None]:
        def apply(session: Session, now: datetime) -> None:
            schedule = session.execute(
                select(Schedule).where(Schedule.secret == run.secret).with_for_update()
            ).scalar_one_or_none()
            if schedule is None or schedule.policy_name != run.policy_name:
                return
            schedule.last_run_id = run.id
            if rotated:
                schedule.last_rotated_at = now
                schedule.next_due_at = next_due(policy, run.secret, now, now)
            else:
                schedule.next_due_at = now + FAILED_RETRY_DELAY

        return apply


class _RunServices:
    """The engine's answers to a step's requests (StepServices), for one run."""

    def __init__(self, engine: Engine, run: Run, provider: Provider) -> None:
        self._engine = engine
        self._run = run
        self._provider = provider

    def bus(self) -> RolloutBus:
        return self._engine.runtime.rollout_bus()

    def read_secret(self, name: str) -> SecretValue:
        return self._provider.read(name).value

    def claim_restart_slot(self, concurrency: int) -> bool:
        run, ledger = self._run, self._engine.runtime.ledger
        with ledger.transaction() as session:
            xact_lock(session, RESTART_SLOTS, run.policy_name)
            peers = session.execute(
                select(Run.id, Run.step_data).where(
                    Run.policy_name == run.policy_name,
                    Run.state == RunState.PROMOTED.value,
                    Run.id != run.id,
                )
            ).all()
            if sum(1 for _, data in peers if data and data.get("slot")) >= concurrency:
                return False
            data = {**(run.step_data or {}), "slot": True}
            claimed = session.execute(
                update(Run)
                .where(Run.id == run.id, Run.lease_owner == self._engine.runtime.worker_id)
                .values(step_data=data)
                .returning(Run.id)
            ).first()
            return claimed is not None
