"""``advance(run_id)``: take the run's lease, run one step, commit the transition.

With ``follow`` (the workers' task), a transition whose next step is due at once takes that
step's lease in the same commit and the same call runs it, while at least half of the call's
time budget is left: a rotation's seven steps cost one Celery message, the first lease and one
statement per step. Each step still has its own lease (a new owner) and its own commit.

The lease is a compare-and-set UPDATE, so a redelivered or duplicated message for a run whose
lease is live, whose state moved on, or whose wait has not ended does nothing. The caller (a
Celery task, or a test) enqueues the next step only after this returns, i.e. after commit.

Time rules (docs/rotation-run.md): every time compared here is the database's (the runtime's
clock); a step runs within its budget (80% of the lease, ``rotation.config.step_limits``), and
before every external action it asks the ledger whether it still holds the lease
(:class:`StepLease`). A worker that lost its lease (frozen, then thawed after another worker
took the run over) stops there and commits nothing: every commit is fenced by the lease's
owner, which is unique per lease taken.

The engine is the one writer of run transitions: steps (``advance``), an operator's rollback
(``roll_back``) and way out of ``needs_attention`` (``retry_run``, ``abandon_run``).

A failure after promotion does not undo anything at once: the run enters ``rolling_back``, whose
step re-promotes the previous version, announces it through the restart strategy and revokes
the abandoned credential only after that (rotation/run/rollback.py). The restart step and the
rollback's announcement are bounded by time (the strategy's budget), not attempts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Interval,
    Row,
    bindparam,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.expression import Executable

from rotation.access.audit import AuditEvent, append_params, append_sql, transition_event
from rotation.access.audit import append as audit_append
from rotation.config import step_limits
from rotation.durations import format_duration
from rotation.errors import (
    ConfigurationError,
    LeaseLost,
    NothingToResolve,
    RotationError,
    SecretNotFound,
    StepBudgetExceeded,
    Throttled,
)
from rotation.ledger.locks import RESTART_SLOTS, xact_lock
from rotation.ledger.models import PolicyRow, Run, RunEvent, Schedule, UTCDateTime
from rotation.policy import Policy
from rotation.policy.due import next_due
from rotation.providers.base import Provider
from rotation.rotators.base import RotationContext, StepGuard
from rotation.rotators.registry import capabilities_of
from rotation.run.notify import Notice, Notifier
from rotation.run.restart import restart_deadline
from rotation.run.retry import ExponentialBackoff, is_retryable
from rotation.run.rollback import rollback_data, rollback_deadline, rollback_plan
from rotation.run.runtime import Runtime
from rotation.run.states import FINAL_STATES, NEXT_STATE, RunState
from rotation.run.steps import (
    FAILED_RETRY_DELAY,
    INSTANT,
    STEPS,
    StepInput,
    StepResult,
    rollback_where_safe,
)
from rotation.values import SecretValue, Stage

if TYPE_CHECKING:
    from rotation.rollout import RolloutBus

__all__ = ["Advance", "Engine", "PauseHook", "StepLease"]

log = logging.getLogger("keyturn.engine")

#: Called as ``hook(step_name, "before" | "after")`` around each step; tests use it to pause a
#: worker at a step boundary and kill it there.
PauseHook = Callable[[str, str], None]

_MAX_ERROR_CHARS = 1000
#: Pauses after each failed rollback try (at most ~2 s in all, well inside a lease).
ROLLBACK_PAUSES = (0.2, 0.5, 1.0, 0.0)
#: The longest wait between tries of a step bounded by time (a restart, a rollback's
#: announcement): once Redis or a deploy hook is back, the run goes on within this.
TIMED_RETRY_CAP = timedelta(seconds=15)
#: The longest wait after a throttled try (unless the backend asks for longer).
THROTTLED_RETRY_CAP = timedelta(seconds=30)
#: ``step_data`` key: since when the current step keeps being throttled (ISO time).
THROTTLED_SINCE = "throttled_since"
#: States whose work a removed policy's run undoes (after promotion it finishes instead).
_BEFORE_PROMOTION = frozenset(
    {RunState.PENDING, RunState.CREATED, RunState.APPLIED, RunState.TESTED}
)
#: How long after the statement that took a lease (its take, the commit that carried it over,
#: a renewal) the lease's first fence check takes that answer instead of asking again: a check
#: narrows the window before an external action to its own round trip, and this keeps it under
#: half a second of this host's monotonic clock, far inside the lease's margin beyond the
#: budget (20% of the lease). Every later check (after an action) asks the ledger.
LEASE_FRESH_SECONDS = 0.5
#: How long a reading of the database's clock stands in for it, moved on by this host's
#: monotonic clock (each lease taken reads it afresh): no extra round trip per timestamp.
_CLOCK_ANCHOR_SECONDS = 5.0


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


class StepLease:
    """One lease taken on one run: the fence of every external action and of the commit.

    ``owner`` is unique per lease taken (worker id + a nonce), so two leases of the same
    process (threads) never pass for each other. The budget is measured on this host's
    monotonic clock from just before the lease was taken (or before the first step of the
    call that carried it over), so it ends before the lease does (database time), whatever
    this host's wall clock says. ``confirmed``: when the statement that took it ran."""

    def __init__(
        self,
        engine: Engine,
        run_id: int,
        owner: str,
        started: float,
        confirmed: float | None = None,
    ) -> None:
        self._engine = engine
        self.run_id = run_id
        self.owner = owner
        self._deadline = started + engine.limits.budget.total_seconds()
        self._confirmed = confirmed

    def remaining(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    def check(self) -> None:
        if time.monotonic() >= self._deadline:
            budget = self._engine.limits.budget.total_seconds()
            raise StepBudgetExceeded(
                f"the step used up its time budget ({budget:g} s, 80% of the lease); "
                "it is tried again"
            )
        if not self.held():
            raise LeaseLost(
                f"this worker no longer holds the lease of run {self.run_id}; another worker "
                "took it over: stopping without any further action"
            )

    def held(self) -> bool:
        """Whether the ledger still says this lease is ours and live (database time); the first
        check takes the answer of the statement that took the lease if that is less than
        ``LEASE_FRESH_SECONDS`` old."""
        confirmed, self._confirmed = self._confirmed, None
        if confirmed is not None and time.monotonic() - confirmed < LEASE_FRESH_SECONDS:
            return True
        engine = self._engine
        params: dict[str, object] = {"run_id": self.run_id, "owner": self.owner}
        if not engine.sql_clock:
            params["at"] = engine.runtime.clock()
        found = engine.execute_one(_held_statement(engine.sql_clock), params)
        return found is not None

    def renew(self) -> bool:
        """Extend the lease by a full lease and restart the budget (before a rollback, which
        needs time of its own); False when the lease is no longer ours."""
        started = time.monotonic()
        now = self._engine.runtime.clock()
        with self._engine.runtime.ledger.transaction() as session:
            renewed = session.execute(
                update(Run)
                .where(
                    Run.id == self.run_id,
                    Run.lease_owner == self.owner,
                    Run.lease_expires_at > now,
                )
                .values(lease_expires_at=now + self._engine.lease)
                .returning(Run.id)
            ).first()
        if renewed is None:
            return False
        self._deadline = started + self._engine.limits.budget.total_seconds()
        self._confirmed = started
        return True


class Engine:
    """Advances rotation runs one step at a time."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        lease: timedelta = timedelta(minutes=5),
        backoff: ExponentialBackoff | None = None,
        pause_hook: PauseHook | None = None,
        throttled_max: timedelta = timedelta(hours=1),
    ) -> None:
        self.runtime = runtime
        self.lease = lease
        self.throttled_max = throttled_max
        self.limits = step_limits(lease)
        self.backoff = backoff or ExponentialBackoff()
        self.pause_hook = pause_hook
        self.notify = Notifier(runtime.environ)
        ledger = runtime.ledger
        postgres = ledger.dialect == "postgresql"
        #: Postgres and the database's own clock: read it inside the statements that use it.
        self._sql_clock = postgres and runtime.clock == ledger.now
        #: Postgres: a commit is one statement (data-modifying CTEs), run in autocommit.
        self._fused = postgres
        self._single = (
            ledger.engine.execution_options(isolation_level="AUTOCOMMIT")
            if postgres
            else ledger.engine
        )
        self._anchor: tuple[datetime, float] | None = None
        self._local = threading.local()  # the connection of the step this thread runs

    # --- the database's time, and single statements ------------------------------------------

    def now(self) -> datetime:
        """The runtime's clock (the database's): a recent reading moved on by this host's
        monotonic clock when the runtime uses the database's clock, else the clock itself."""
        anchor = self._anchor
        if anchor is not None:
            elapsed = time.monotonic() - anchor[1]
            if elapsed < _CLOCK_ANCHOR_SECONDS:
                return anchor[0] + timedelta(seconds=elapsed)
        now = self.runtime.clock()
        if self._sql_clock:
            self._anchor = (now, time.monotonic())
        return now

    @property
    def sql_clock(self) -> bool:
        """Whether statements read the database's clock themselves (``clock_timestamp()``)."""
        return self._sql_clock

    def execute_one(
        self, statement: Executable, params: dict[str, object] | None = None
    ) -> Row[Any] | None:
        """Run one statement in a transaction of its own (Postgres: autocommit, no BEGIN or
        COMMIT round trip); its first row."""
        held: Connection | None = getattr(self._local, "conn", None)
        if held is not None and not held.invalidated:
            # autocommit: the server committed the statement already; no COMMIT to send (inside
            # _atomic, the transaction's end commits it)
            row: Row[Any] | None = held.execute(statement, params or {}).first()
            return row
        with self._single.connect() as conn:
            row = conn.execute(statement, params or {}).first()
            conn.commit()
        return row

    @property
    def _me(self) -> str:
        return self.runtime.worker_id

    def _new_owner(self, who: str | None = None) -> str:
        return f"{(who or self._me)[:180]}#{secrets.token_hex(4)}"

    # --- leasing ---------------------------------------------------------------------------

    def _take_lease(
        self, run_id: int, expected: RunState | None, now: datetime, owner: str | None = None
    ) -> bool:
        """Take the lease of an open run at ``now`` (the database's time); see :meth:`_take`."""
        return self._take(run_id, expected, owner or self._new_owner(), now) is not None

    def _take(
        self, run_id: int, expected: RunState | None, owner: str, at: datetime | None = None
    ) -> _Taken | None:
        """Take the lease of an open run that is not leased and not waiting, counting an
        attempt of its current step: one compare-and-set ``UPDATE`` that returns the run, the
        database's time it used, and what the step needs of its policy and schedule."""
        sql_clock = at is None and self._sql_clock
        params: dict[str, object] = {"run_id": run_id, "owner": owner}
        if sql_clock:
            params["lease"] = self.lease
        else:
            now = at if at is not None else self.runtime.clock()
            params.update(at=now, expires=now + self.lease)
        if expected is not None:
            params["expected"] = expected.value
        statement = _take_statement(sql_clock, expected is not None)
        asked = time.monotonic()
        row = self.execute_one(statement, params)
        if row is None:
            return None
        values = row._mapping
        if self._sql_clock:
            self._anchor = (values["lease_now"], time.monotonic())
        return _Taken(
            _detached_run(values),
            owner,
            asked,
            values["lease_now"],
            values["policy_hash"],
            values["policy_removed_at"],
            values["schedule_removed_at"],
        )

    def _policy_of(self, run: Run, spec_hash: str | None) -> Policy:
        """The run's policy, parsed once per spec (read from the ledger only when it changed)."""
        cached = self.runtime.cached_policy(run.policy_name, spec_hash) if spec_hash else None
        if cached is not None:
            return cached
        with self.runtime.ledger.sessions() as session:
            row = session.get(PolicyRow, run.policy_name)
        if row is None:
            raise ConfigurationError(f"policy {run.policy_name!r} no longer exists")
        return self.runtime.policy(row)

    # --- the one entry point ---------------------------------------------------------------

    def advance(
        self, run_id: int, expected: RunState | str | None = None, *, follow: bool = False
    ) -> Advance:
        """Run the next step of ``run_id`` if this worker can take its lease; with ``follow``,
        go on with the steps after it while they are due at once and at least half of this
        call's time budget is left (the caller's time limits cover one budget)."""
        if not self._fused:
            return self._advance(run_id, expected, follow)
        # Postgres: the steps' statements share one pooled connection (checked, and pinged,
        # once); each statement still commits on its own (autocommit), so no transaction or
        # lock stays open during a step's external action
        with self._single.connect() as conn:
            self._local.conn = conn
            try:
                return self._advance(run_id, expected, follow)
            finally:
                self._local.conn = None

    def _advance(self, run_id: int, expected: RunState | str | None, follow: bool) -> Advance:
        expected_state = RunState(expected) if expected is not None else None
        started = time.monotonic()
        taken = self._take(run_id, expected_state, self._new_owner())
        if taken is None:
            return Advance(run_id, expected_state, executed=False)
        while True:
            done = self._step(taken, started, follow)
            if isinstance(done, Advance):
                return done
            taken = done  # the commit took the next step's lease

    def _step(self, taken: _Taken, started: float, follow: bool) -> Advance | _Taken:
        """Run the step of a run whose lease ``taken`` holds; its outcome, or the next step's
        lease when the commit carried it over (``follow``)."""
        run, now, owner = taken.run, taken.now, taken.owner
        lease = StepLease(self, run.id, owner, started, taken.confirmed)
        state = RunState(run.state)
        step_name, _ = STEPS[state]
        # setting the step up (policy, provider, rotator) can fail: that is an attempt too
        try:
            if taken.policy_hash is None:
                raise ConfigurationError(f"policy {run.policy_name!r} no longer exists")
            policy = self._policy_of(run, taken.policy_hash)
            step = self.step_input(run, policy, now, guard=lease)
        except Exception as exc:
            return self._on_setup_error(run, state, step_name, exc, owner)

        deadline = self._deadline(state, step)
        if deadline is None and run.attempt > run.max_attempts:
            message = f"attempts exhausted at step {step_name} ({run.max_attempts})"
            return self._give_up(run, state, step_name, step, message, lease)
        if deadline is not None and now >= deadline + self.lease:  # its tries keep dying
            message = f"{run.last_error or 'no try finished'}; its time budget ran out"
            return self._give_up(run, state, step_name, step, message, lease)
        removed = _removal(run, taken.policy_removed_at, taken.schedule_removed_at)
        if removed is not None and state in _BEFORE_PROMOTION:
            # governed no more: undo what is not yet live (a promoted value finishes its run)
            return self._fail(run, state, step_name, step, removed, lease)

        self._pause(step_name, "before")
        try:
            result = STEPS[state][1](step)
        except Exception as exc:
            return self._on_error(run, state, step_name, step, exc, lease, deadline)
        self._pause(step_name, "after")
        if result.wait_until is not None:
            return self._wait(run, state, step_name, result, owner, now)
        if state is RunState.ROLLING_BACK:
            return self._rolled_back(run, step_name, policy, result, owner)
        return self._transition(run, state, step_name, policy, result, lease, follow)

    def _deadline(self, state: RunState, step: StepInput) -> datetime | None:
        """Until when this step's retryable failures are retried (None: by attempts)."""
        if state is RunState.PROMOTED:
            return restart_deadline(step, step.policy.restart, step.step_data)
        if state is RunState.ROLLING_BACK:
            return rollback_deadline(step)
        return None

    def _pause(self, step_name: str, phase: str) -> None:
        if self.pause_hook is not None:
            self.pause_hook(step_name, phase)

    def step_input(
        self, run: Run, policy: Policy, now: datetime, guard: StepGuard | None = None
    ) -> StepInput:
        """What the step leaving ``run``'s state gets (also used to roll a run back by hand)."""
        provider = self.runtime.provider(run.provider)
        context = RotationContext(
            secret=run.secret,
            provider=provider,
            token=run.token,
            generator=policy.generator,
            target=policy.target_settings(),
            read_secret=lambda name: provider.read(name).value,
            guard=guard,
        )
        owner = guard.owner if isinstance(guard, StepLease) else None
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
            services=_RunServices(self, run, provider, owner),
            step_data=dict(run.step_data or {}),
            guard=guard if guard is not None else StepInput.unguarded(),
        )

    # --- commits (each fenced by our lease) ------------------------------------------------

    def _commit(
        self,
        run: Run,
        *,
        owner: str,
        step_name: str,
        to_state: RunState,
        outcome: str,
        message: str | None,
        values: dict[str, object],
        schedule_update: _Reschedule | None = None,
        audit: AuditEvent | None = None,
        carry: str | None = None,
    ) -> Mapping[Any, Any] | None:
        """Commit a transition, fenced by ``owner``: the run's row, its event, the schedule
        (``schedule_update``) and the audit records, all or nothing. Postgres: one statement.

        ``carry``: the new state's lease goes to this owner at once (an attempt of its step),
        and the commit returns what a lease take returns of the policy and schedule. None when
        the lease was lost."""
        now = self.now()
        audits = [dataclasses.replace(audit, at=now)] if audit is not None else []
        if to_state.value != run.state:
            audits.append(
                transition_event(run, to_state.value, step_name, outcome, message, now, values)
            )
        event = {
            "run_id": run.id,
            "at": now,
            "step": step_name,
            "from_state": run.state,
            "to_state": to_state.value,
            "outcome": outcome,
            "attempt": run.attempt,
            "worker": owner.split("#", 1)[0],
            "message": message,
        }
        run_values = {"lease_owner": None, "lease_expires_at": None, "updated_at": now, **values}
        if carry is not None:
            run_values.update(lease_owner=carry, lease_expires_at=now + self.lease, attempt=1)
        if self._fused and len(audits) <= 1:
            audit_one = audits[0] if audits else None
            committed = self._commit_fused(
                run, owner, run_values, event, schedule_update, audit_one, now, carry is not None
            )
        else:
            committed = self._commit_steps(
                run, owner, run_values, event, schedule_update, audits, now, carry is not None
            )
        if committed is None:
            log.warning(
                "lease lost before commit; the step will be redone by the lease holder",
                extra={"action": "run.lease_lost", "run_id": run.id, "step": step_name},
            )
            return None
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
        return committed

    def _commit_fused(
        self,
        run: Run,
        owner: str,
        run_values: dict[str, object],
        event: dict[str, object],
        schedule_update: _Reschedule | None,
        audit: AuditEvent | None,
        now: datetime,
        carry: bool,
    ) -> Mapping[Any, Any] | None:
        """Postgres: the whole commit as one statement of data-modifying CTEs; each part after
        the run's fenced ``UPDATE`` (``r``) happens only if that matched. The audit head's row
        is locked last, for the shortest time."""
        params: dict[str, object] = {"run_id": run.id, "owner": owner, "from_state": run.state}
        if carry:
            params.update(c_policy=run.policy_name, c_secret=run.secret)
        params.update({f"v_{key}": value for key, value in run_values.items()})
        params.update({f"e_{key}": value for key, value in event.items()})
        if schedule_update is not None:
            params.update(schedule_update.params(now))
        if audit is not None:
            params.update(append_params(audit))
        statement = _fused_commit(
            tuple(run_values), schedule_update is not None, audit is not None, carry
        )
        row = self.execute_one(statement, params)
        return row._mapping if row is not None else None

    def _commit_steps(
        self,
        run: Run,
        owner: str,
        run_values: dict[str, object],
        event: dict[str, object],
        schedule_update: _Reschedule | None,
        audits: list[AuditEvent],
        now: datetime,
        carry: bool,
    ) -> Mapping[Any, Any] | None:
        """The commit as a transaction of statements (SQLite; two audit records), in the
        fused statement's lock order: the run, the schedule, the audit chain."""
        with self.runtime.ledger.transaction() as session:
            changed = session.execute(
                update(Run)
                .where(Run.id == run.id, Run.lease_owner == owner, Run.state == run.state)
                .values(**run_values)
                .returning(Run.id)
            ).first()
            if changed is None:
                return None
            session.add(RunEvent(**event))
            if schedule_update is not None:
                schedule_update.apply(session, now)
            for audit in audits:
                audit_append(session, audit)
            if not carry:
                return {"id": run.id}
            return session.execute(_governance(run.policy_name, run.secret)).one()._mapping

    def _transition(
        self,
        run: Run,
        state: RunState,
        step_name: str,
        policy: Policy,
        result: StepResult,
        lease: StepLease,
        follow: bool,
    ) -> Advance | _Taken:
        new_state = NEXT_STATE[state]
        if follow and new_state in INSTANT:
            return self._through(run, state, step_name, policy, result, lease)
        carry = None
        if follow and new_state not in FINAL_STATES:
            if lease.remaining() >= self.limits.budget.total_seconds() / 2:
                carry = self._new_owner()
        asked = time.monotonic()
        row, values, now = self._commit_step(
            run, state, step_name, policy, result, lease.owner, carry
        )
        if row is not None and carry is not None:
            return _carried(run, values, row, carry, asked, now)
        return self._moved(run, new_state, row is not None, result.note)

    def _through(
        self,
        run: Run,
        state: RunState,
        step_name: str,
        policy: Policy,
        result: StepResult,
        lease: StepLease,
    ) -> Advance:
        """Commit this step and the step after it, which does nothing outside the ledger
        (``INSTANT``: ``finish``), in one transaction under this lease: two events, two audit
        records. Its pause hooks run first (no transaction stays open across them)."""
        instant = NEXT_STATE[state]
        name = STEPS[instant][0]
        self._pause(name, "before")
        self._pause(name, "after")
        with self._atomic():
            row, values, _ = self._commit_step(
                run, state, step_name, policy, result, lease.owner, lease.owner
            )
            if row is None:
                return self._moved(run, instant, False, None)
            following = _moved_on(run, values)
            done, _, _ = self._commit_step(
                following, instant, name, policy, StepResult(), lease.owner, None
            )
        return self._moved(following, NEXT_STATE[instant], done is not None, None)

    def _commit_step(
        self,
        run: Run,
        state: RunState,
        step_name: str,
        policy: Policy,
        result: StepResult,
        owner: str,
        carry: str | None,
    ) -> tuple[Mapping[Any, Any] | None, dict[str, object], datetime]:
        """Commit the step's transition to the next state (the commit's row, or None when the
        lease was lost), with the run columns it set and the time it used."""
        new_state = NEXT_STATE[state]
        now = self.now()
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
        row = self._commit(
            run,
            owner=owner,
            step_name=step_name,
            to_state=new_state,
            outcome="ok",
            message=result.note,
            values=values,
            schedule_update=schedule_update,
            carry=carry,
        )
        return row, values, now

    def _moved(self, run: Run, new_state: RunState, committed: bool, note: str | None) -> Advance:
        """A transition's outcome (the run's end is notified)."""
        if committed and new_state is RunState.SUCCEEDED:
            self.notify(Notice(run.id, run.secret, run.policy_name, new_state.value, note))
        return Advance(
            run.id,
            new_state,
            executed=True,
            enqueue=committed and new_state not in FINAL_STATES,
        )

    @contextlib.contextmanager
    def _atomic(self) -> Iterator[None]:
        """Postgres: the statements inside run in one transaction (on a connection of their
        own, not the step's autocommit one); elsewhere each commit is its own transaction."""
        if not self._fused:
            yield
            return
        held = getattr(self._local, "conn", None)
        with self.runtime.ledger.engine.connect() as conn, conn.begin():
            self._local.conn = conn
            try:
                yield
            finally:
                self._local.conn = held

    def _wait(
        self,
        run: Run,
        state: RunState,
        step_name: str,
        result: StepResult,
        owner: str,
        now: datetime,
    ) -> Advance:
        assert result.wait_until is not None
        # a wait is not a failed try: give the attempt back (a piece done: start afresh)
        values: dict[str, object] = {
            "attempt": 0 if result.piece_done else run.attempt - 1,
            "next_attempt_at": result.wait_until,
            "enqueued_at": None,
        }
        # a wait that has already ended (a restart wave done, the next one due) goes on at once
        go_on = result.wait_until <= now
        if go_on:
            values["enqueued_at"] = now
        if result.step_data is not None:
            values["step_data"] = result.step_data
        committed = (
            self._commit(
                run,
                owner=owner,
                step_name=step_name,
                to_state=state,
                outcome="wait",
                message=result.note or f"waiting until {result.wait_until:%Y-%m-%dT%H:%M:%SZ}",
                values=values,
            )
            is not None
        )
        return Advance(
            run.id,
            state,
            executed=True,
            enqueue=committed and go_on,
            wait_until=None if go_on else result.wait_until,
        )

    def _lost(self, run: Run, step_name: str, exc: BaseException) -> Advance:
        log.warning(
            "run %s step %s stopped: %s",
            run.id,
            step_name,
            exc,
            extra={"action": "run.lease_lost", "run_id": run.id, "step": step_name},
        )
        return Advance(run.id, RunState(run.state), executed=True)

    def _on_setup_error(
        self, run: Run, state: RunState, step_name: str, exc: Exception, owner: str
    ) -> Advance:
        """The step could not be set up (its policy, provider or rotator): an attempt like any
        other, retried after a backoff (another worker, or a fixed configuration, may manage);
        once the attempts are used up the run needs a human. Nothing ran, so nothing is undone."""
        error = f"cannot set up step {step_name}: {_describe(exc)}"
        log.warning(
            "run %s %s",
            run.id,
            error,
            extra={"action": "run.setup_failed", "run_id": run.id, "step": step_name},
        )
        if run.attempt >= run.max_attempts:
            message = (
                f"{error}; attempts exhausted ({run.max_attempts}); nothing was rolled back "
                "(the step could not be set up)"
            )
            return self._end(run, RunState.NEEDS_ATTENTION, step_name, None, message, owner)
        return self._retry_later(run, state, step_name, error, owner)

    def _retry_later(
        self,
        run: Run,
        state: RunState,
        step_name: str,
        error: str,
        owner: str,
        deadline: datetime | None = None,
    ) -> Advance:
        delay = self.backoff.delay(max(1, run.attempt))
        if deadline is not None:  # a time budget: tries are cheap, come back soon after a fix
            delay = min(delay, TIMED_RETRY_CAP)
        wait_until = self.now() + delay
        if deadline is not None:
            wait_until = min(wait_until, deadline)  # the last try comes at the deadline
        self._commit(
            run,
            owner=owner,
            step_name=step_name,
            to_state=state,
            outcome="retry",
            message=error,
            values={"next_attempt_at": wait_until, "enqueued_at": None, "last_error": error},
        )
        return Advance(run.id, state, executed=True, wait_until=wait_until)

    def _on_error(
        self,
        run: Run,
        state: RunState,
        step_name: str,
        step: StepInput,
        exc: Exception,
        lease: StepLease,
        deadline: datetime | None = None,
    ) -> Advance:
        if isinstance(exc, LeaseLost):
            return self._lost(run, step_name, exc)
        if isinstance(exc, Throttled):
            return self._throttled(run, state, step_name, step, exc, lease)
        error = _describe(exc)
        log.warning(
            "run %s step %s failed: %s",
            run.id,
            step_name,
            error,
            extra={"action": "run.step_failed", "run_id": run.id, "step": step_name},
        )
        if not is_retryable(exc):
            return self._fail(run, state, step_name, step, error, lease)
        if deadline is not None:  # a time budget: retried until it ends, whatever the count
            if self.now() >= deadline:
                budget = f"its time budget ran out at {deadline:%Y-%m-%dT%H:%M:%SZ}"
                return self._give_up(run, state, step_name, step, f"{error} ({budget})", lease)
            return self._retry_later(run, state, step_name, error, lease.owner, deadline)
        if run.attempt >= run.max_attempts:
            return self._give_up(run, state, step_name, step, error, lease)
        return self._retry_later(run, state, step_name, error, lease.owner)

    def _throttled(
        self,
        run: Run,
        state: RunState,
        step_name: str,
        step: StepInput,
        exc: Throttled,
        lease: StepLease,
    ) -> Advance:
        """The backend is over its quota: a wait, not a failed try (the attempt is given back),
        until the step has been throttled for ``throttled_max``; then a human looks."""
        now = self.runtime.clock()
        data = dict(run.step_data or {})
        since = datetime.fromisoformat(data.get(THROTTLED_SINCE) or now.isoformat())
        error = _describe(exc)
        if now - since >= self.throttled_max:
            limit = format_duration(self.throttled_max)
            message = (
                f"throttled by the backend for more than {limit} (KEYTURN_THROTTLED_MAX_SECONDS) "
                f"at step {step_name}: {error}"
            )
            return self._give_up(run, state, step_name, step, message, lease)
        count = int(data.get("throttled", 0)) + 1
        delay = (
            timedelta(seconds=exc.retry_after)
            if exc.retry_after
            else min(self.backoff.delay(count), THROTTLED_RETRY_CAP)
        )
        wait_until = now + delay
        data.update({THROTTLED_SINCE: since.isoformat(), "throttled": count})
        self._commit(
            run,
            owner=lease.owner,
            step_name=step_name,
            to_state=state,
            outcome="throttled",
            message=f"{error}; waiting until {wait_until:%H:%M:%S} (no attempt spent)",
            values={
                "attempt": run.attempt - 1,
                "next_attempt_at": wait_until,
                "enqueued_at": None,
                "last_error": error,
                "step_data": data,
            },
        )
        return Advance(run.id, state, executed=True, wait_until=wait_until)

    def _rollback(self, state: RunState, step: StepInput) -> tuple[bool, str]:
        """Roll back where safe, trying a flaky backend a few times (each part is idempotent);
        a short bounded pause beats leaving a pending value behind for a human."""
        error: Exception | None = None
        for pause in ROLLBACK_PAUSES:
            try:
                return True, rollback_where_safe(step, state)
            except LeaseLost:
                raise
            except Exception as exc:
                error = exc
                if not is_retryable(exc):
                    break
                time.sleep(pause)
        assert error is not None
        return False, f"rollback incomplete ({_describe(error)})"

    def _fail(
        self,
        run: Run,
        state: RunState,
        step_name: str,
        step: StepInput,
        error: str,
        lease: StepLease,
    ) -> Advance:
        if state is RunState.PROMOTED:
            return self._begin_rollback(run, step_name, error, RunState.FAILED, lease.owner)
        if state is RunState.ROLLING_BACK:
            return self._rollback_stopped(run, step_name, step, error, lease.owner)
        # the rollback gets a budget of its own, under a renewed lease
        if not lease.renew():
            return self._lost(run, step_name, LeaseLost("lease lost before the rollback"))
        try:
            rolled_back, note = self._rollback(state, step)
        except LeaseLost as exc:
            return self._lost(run, step_name, exc)
        final = RunState.FAILED if rolled_back else RunState.NEEDS_ATTENTION
        message = f"{error}; {note}"
        return self._end(run, final, step_name, step.policy, message, lease.owner)

    def _give_up(
        self,
        run: Run,
        state: RunState,
        step_name: str,
        step: StepInput,
        error: str,
        lease: StepLease,
    ) -> Advance:
        if state is RunState.PROMOTED:
            return self._begin_rollback(
                run, step_name, error, RunState.NEEDS_ATTENTION, lease.owner
            )
        if state is RunState.ROLLING_BACK:
            return self._rollback_stopped(run, step_name, step, error, lease.owner)
        if not lease.renew():
            return self._lost(run, step_name, LeaseLost("lease lost before the rollback"))
        try:
            _, note = self._rollback(state, step)
        except LeaseLost as exc:
            return self._lost(run, step_name, exc)
        message = f"{error}; {note}"
        final = RunState.NEEDS_ATTENTION
        return self._end(run, final, step_name, step.policy, message, lease.owner)

    # --- rolling back after promotion (rotation/run/rollback.py) ---------------------------

    def _begin_rollback(
        self,
        run: Run,
        step_name: str,
        error: str,
        end: RunState,
        owner: str,
        *,
        retry_after: timedelta | None = None,
        audit: AuditEvent | None = None,
    ) -> Advance:
        """Move a promoted run to ``rolling_back``; it ends in ``end`` once rolled back."""
        now = self.now()
        message = (
            f"{error}; rolling back: the previous version is made current again and announced "
            "through the restart strategy before the new credential is revoked"
        )
        committed = (
            self._commit(
                run,
                owner=owner,
                step_name=step_name,
                to_state=RunState.ROLLING_BACK,
                outcome="rollback",
                message=message,
                values={
                    "state": RunState.ROLLING_BACK.value,
                    "attempt": 0,
                    "state_entered_at": now,
                    "next_attempt_at": None,
                    "enqueued_at": now,
                    "last_error": error[:_MAX_ERROR_CHARS],
                    "step_data": rollback_data(end, error, retry_after),
                },
                audit=audit,
            )
            is not None
        )
        return Advance(run.id, RunState.ROLLING_BACK, executed=True, enqueue=committed)

    def _rolled_back(
        self, run: Run, step_name: str, policy: Policy, result: StepResult, owner: str
    ) -> Advance:
        plan = rollback_plan(run.step_data)
        end = RunState(plan.get("end", RunState.FAILED.value))
        retry_after = plan.get("retry_after")
        message = f"{plan.get('reason') or 'rolled back'}; {result.note}"
        return self._end(
            run,
            end,
            step_name,
            policy,
            message,
            owner,
            outcome="rollback",
            retry_after=timedelta(seconds=retry_after) if retry_after is not None else None,
        )

    def _rollback_stopped(
        self, run: Run, step_name: str, step: StepInput, error: str, owner: str
    ) -> Advance:
        """The rollback cannot go on: a human looks (with both credentials working, for a kind
        that keeps two: nothing is revoked)."""
        plan = rollback_plan(run.step_data)
        done = plan.get("restored") or "the previous version may not be current yet"
        if capabilities_of(step.policy.kind, step.policy.target).dual_valid:
            left = (
                "the abandoned credential was NOT revoked (consumers may still use it): "
                "`keyturn resolve --retry` announces again, `--abandon` revokes it without waiting"
            )
        else:
            left = (
                "this kind has one credential, already set back: consumers that were not told "
                "fail until they reload; `keyturn resolve --retry` announces again"
            )
        message = (
            f"{plan.get('reason') or 'rolling back'}; rollback stopped: {error}; {done}; {left}"
        )
        return self._end(run, RunState.NEEDS_ATTENTION, step_name, step.policy, message, owner)

    def _end(
        self,
        run: Run,
        final: RunState,
        step_name: str,
        policy: Policy | None,
        message: str,
        owner: str,
        *,
        outcome: str = "failed",
        retry_after: timedelta | None = None,
    ) -> Advance:
        now = self.now()
        committed = (
            self._commit(
                run,
                owner=owner,
                step_name=step_name,
                to_state=final,
                outcome=outcome,
                message=message,
                values=_ended(final, now, message),
                # needs_attention keeps the schedule blocked until a human resolves the run
                schedule_update=self._reschedule(
                    run, policy, rotated=False, retry_after=retry_after
                )
                if final is RunState.FAILED and policy is not None
                else None,
            )
            is not None
        )
        if committed:
            self.notify(Notice(run.id, run.secret, run.policy_name, final.value, message))
        return Advance(run.id, final, executed=True)

    def _reschedule(
        self, run: Run, policy: Policy, *, rotated: bool, retry_after: timedelta | None = None
    ) -> _Reschedule:
        return _Reschedule(run.id, run.secret, run.policy_name, policy, rotated, retry_after)

    # --- a human's way out of needs_attention --------------------------------------------

    def _take_resolve_lease(self, run_id: int, actor: str) -> tuple[Run, str]:
        """The lease of a run in ``needs_attention`` for an operator's action (no step of a
        final run ever runs, but two operators must not resolve it at once)."""
        owner = self._new_owner(f"resolve:{actor}@{self._me}")
        now = self.runtime.clock()
        with self.runtime.ledger.transaction() as session:
            taken = session.execute(
                update(Run)
                .where(
                    Run.id == run_id,
                    Run.state == RunState.NEEDS_ATTENTION.value,
                    or_(Run.lease_expires_at.is_(None), Run.lease_expires_at < now),
                )
                .values(lease_owner=owner, lease_expires_at=now + self.lease)
                .returning(Run.id)
            ).first()
            run = session.get(Run, run_id)
        if taken is None or run is None:
            raise NothingToResolve(
                f"run {run_id} does not need attention (any more), or another operator is "
                "resolving it right now"
            )
        return run, owner

    def _release(self, run: Run, owner: str) -> None:
        with self.runtime.ledger.transaction() as session:
            session.execute(
                update(Run)
                .where(Run.id == run.id, Run.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None)
            )

    def stopped_state(self, run: Run) -> RunState:
        """The state a run was in when it ended (its last event into ``needs_attention``)."""
        with self.runtime.ledger.sessions() as session:
            stopped = session.scalar(
                select(RunEvent.from_state)
                .where(RunEvent.run_id == run.id, RunEvent.to_state == run.state)
                .order_by(RunEvent.id.desc())
                .limit(1)
            )
        return RunState(stopped) if stopped and stopped not in _FINAL_VALUES else RunState.PENDING

    def _resolve_input(self, run: Run, owner: str, started: float) -> StepInput:
        with self.runtime.ledger.sessions() as session:
            row = session.get(PolicyRow, run.policy_name)
        if row is None:
            raise ConfigurationError(
                f"policy {run.policy_name!r} of run {run.id} no longer exists in the ledger; "
                "nothing was changed"
            )
        policy = self.runtime.policy(row)
        try:
            guard = StepLease(self, run.id, owner, started)
            return self.step_input(run, policy, self.runtime.clock(), guard)
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"cannot reach the backend of run {run.id} from here ({exc.message}); run the "
                "command where the workers' settings are"
            ) from None

    def retry_run(self, run_id: int, actor: str) -> tuple[Advance, str]:
        """Resume a run that needs attention from the step it stopped at; the caller enqueues
        ``advance`` (``Advance.enqueue``). Returns that and a note of where it resumes.

        The backend tells where that is: a run stopped before promotion whose pending value is
        still staged resumes at ``apply`` (apply and test are redone: a partial undo may have
        touched the target); one stopped after promotion whose value is still current resumes
        where it stopped. A run whose work was undone (its give-up rolled back) starts again
        from ``create`` under a new token, once what is left of it is rolled back."""
        started = time.monotonic()
        run, owner = self._take_resolve_lease(run_id, actor)
        try:
            stopped = self.stopped_state(run)
            step = self._resolve_input(run, owner, started)
            resume, note, fresh = self._resume_point(run, stopped, step)
        except BaseException:
            self._release(run, owner)
            raise
        now = self.runtime.clock()
        values: dict[str, object] = {
            "state": resume.value,
            "attempt": 0,
            "next_attempt_at": None,
            "enqueued_at": now,
            "finished_at": None,
            "last_error": None,
            "state_entered_at": self._entered_at(run, resume) or now,
        }
        if fresh:
            values.update(
                token=secrets.token_hex(16), from_version=None, to_version=None, step_data=None
            )
        elif resume in (RunState.PROMOTED, RunState.ROLLING_BACK):
            # the announcement starts afresh (its old start would count as a timeout)
            plan = rollback_plan(run.step_data) if resume is RunState.ROLLING_BACK else None
            values["step_data"] = {"rollback": plan} if plan else None
        message = f"retried by {actor}: {note}"
        committed = (
            self._commit(
                run,
                owner=owner,
                step_name="resolve",
                to_state=resume,
                outcome="ok",
                message=message,
                values=values,
                audit=self._resolve_audit(run, "run.retry", actor, message),
            )
            is not None
        )
        if not committed:
            raise NothingToResolve(f"run {run.id} changed while it was being resolved; look again")
        return Advance(run.id, resume, executed=True, enqueue=True), note

    def _resume_point(
        self, run: Run, stopped: RunState, step: StepInput
    ) -> tuple[RunState, str, bool]:
        """Where to resume, why, and whether the run starts over under a new token."""

        def token_of(stage: Stage) -> str | None:
            try:
                return step.provider.read(run.secret, stage=stage).token
            except SecretNotFound:
                return None

        if stopped is RunState.ROLLING_BACK and rollback_plan(run.step_data):
            return stopped, "resuming the rollback (consumers are told again)", False
        if stopped in (RunState.PROMOTED, RunState.RESTARTED, RunState.RETIRED):
            if token_of(Stage.CURRENT) == run.token:
                return stopped, f"resuming at {stopped.value}", False
        elif stopped in (RunState.CREATED, RunState.APPLIED, RunState.TESTED):
            if token_of(Stage.PENDING) == run.token:
                return RunState.CREATED, "resuming at created (apply and test are redone)", False
        elif token_of(Stage.PENDING) == run.token:
            return RunState.PENDING, "resuming at pending (its value is staged)", False
        undo_from = stopped if stopped in _BEFORE_PROMOTION else RunState.PROMOTED
        note = rollback_where_safe(step, undo_from)
        return RunState.PENDING, f"starting over with a new token ({note})", True

    def roll_back(
        self, run_id: int, actor: str, retry_after: timedelta, *, expected: RunState
    ) -> Advance:
        """An operator's rollback of a promoted run (``expected``: ``promoted``, or
        ``restarted`` before its retire step tried anything): the run enters ``rolling_back``
        and the caller enqueues its step (``Advance.enqueue``), which tells consumers before
        the new credential is revoked. Raises :class:`NothingToResolve` when the run moved."""
        owner = self._new_owner(f"rollback:{actor}@{self._me}")
        now = self.runtime.clock()
        with self.runtime.ledger.transaction() as session:
            taken = session.execute(
                update(Run)
                .where(
                    Run.id == run_id,
                    Run.state == expected.value,
                    or_(Run.lease_expires_at.is_(None), Run.lease_expires_at < now),
                    or_(Run.state == RunState.PROMOTED.value, Run.attempt == 0),
                )
                .values(lease_owner=owner, lease_expires_at=now + self.lease, updated_at=now)
                .returning(Run.id)
            ).first()
            run = session.get(Run, run_id)
        if taken is None or run is None:
            raise NothingToResolve(f"run {run_id} is being advanced or moved on; try again")
        reason = f"rolled back by {actor}"
        audit = self._resolve_audit(run, "run.rollback", actor, reason)
        return self._begin_rollback(
            run, "rollback", reason, RunState.FAILED, owner, retry_after=retry_after, audit=audit
        )

    def _entered_at(self, run: Run, state: RunState) -> datetime | None:
        """When the run last entered ``state`` (so a resumed retire keeps its grace)."""
        with self.runtime.ledger.sessions() as session:
            return session.scalar(
                select(RunEvent.at)
                .where(
                    RunEvent.run_id == run.id,
                    RunEvent.to_state == state.value,
                    RunEvent.outcome == "ok",
                )
                .order_by(RunEvent.id.desc())
                .limit(1)
            )

    def abandon_run(self, run_id: int, actor: str, retry_after: timedelta) -> str:
        """Roll a run that needs attention back where safe and end it ``failed``; the schedule
        tries the secret again after ``retry_after``. Returns the rollback's note. When the
        rollback fails the run keeps needing attention (the error says why)."""
        started = time.monotonic()
        run, owner = self._take_resolve_lease(run_id, actor)
        try:
            stopped = self.stopped_state(run)
            step = self._resolve_input(run, owner, started)
        except BaseException:
            self._release(run, owner)
            raise
        try:
            # a rollback that stopped: finish it at once (consumers were told, or will not be)
            undo_from = RunState.PROMOTED if stopped is RunState.ROLLING_BACK else stopped
            note = rollback_where_safe(step, undo_from)
        except Exception as exc:
            error = f"abandon by {actor} incomplete: rollback failed ({_describe(exc)})"
            self._commit(
                run,
                owner=owner,
                step_name="resolve",
                to_state=RunState.NEEDS_ATTENTION,
                outcome="failed",
                message=error,
                values={"last_error": error[:_MAX_ERROR_CHARS]},
                audit=self._resolve_audit(run, "run.abandon", actor, error, failed=exc),
            )
            raise RotationError(f"{error}; run {run.id} still needs attention") from exc
        now = self.runtime.clock()
        message = f"abandoned by {actor}: {note}"
        policy = step.policy
        committed = (
            self._commit(
                run,
                owner=owner,
                step_name="resolve",
                to_state=RunState.FAILED,
                outcome="rollback",
                message=message,
                values=_ended(RunState.FAILED, now, message),
                schedule_update=self._reschedule(
                    run, policy, rotated=False, retry_after=retry_after
                ),
                audit=self._resolve_audit(run, "run.abandon", actor, message),
            )
            is not None
        )
        if not committed:
            raise NothingToResolve(f"run {run.id} changed while it was being resolved; look again")
        return note

    @staticmethod
    def _resolve_audit(
        run: Run, action: str, actor: str, detail: str, failed: Exception | None = None
    ) -> AuditEvent:
        return AuditEvent(
            action=action,
            actor=actor,
            outcome=f"error:{type(failed).__name__}" if failed is not None else "ok",
            secret=run.secret,
            run_id=run.id,
            detail=detail[:500],
        )


_FINAL_VALUES = frozenset(s.value for s in FINAL_STATES)


@dataclass(frozen=True)
class _Reschedule:
    """What a run's end does to its secret's schedule (if the schedule is still its policy's):
    the last run, and unless the schedule was removed, the next due time (a success: from the
    policy; a failure: after ``retry_after``)."""

    run_id: int
    secret: str
    policy_name: str
    policy: Policy
    rotated: bool
    retry_after: timedelta | None

    def next_due(self, now: datetime) -> datetime:
        if self.rotated:
            return next_due(self.policy, self.secret, now, now)
        return now + (self.retry_after or FAILED_RETRY_DELAY)

    def params(self, now: datetime) -> dict[str, object]:
        """The ``s_*`` parameters of the fused commit's schedule part."""
        return {
            "s_secret": self.secret,
            "s_policy": self.policy_name,
            "s_rotated": self.rotated,
            "s_next_due": self.next_due(now),
        }

    def apply(self, session: Session, now: datetime) -> None:
        schedule = session.execute(
            select(Schedule).where(Schedule.secret == self.secret).with_for_update()
        ).scalar_one_or_none()
        if schedule is None or schedule.policy_name != self.policy_name:
            return
        schedule.last_run_id = self.run_id
        if self.rotated:
            schedule.last_rotated_at = now
        if schedule.removed_at is None:  # kept for its history; never due while removed
            schedule.next_due_at = self.next_due(now)


_RUN_COLUMNS = Run.__table__.c
#: What a step and its commit read of the run (the lease take returns only these).
_TAKEN_COLUMNS = tuple(
    _RUN_COLUMNS[name]
    for name in (
        "id",
        "secret",
        "policy_name",
        "provider",
        "actor",
        "state",
        "attempt",
        "max_attempts",
        "token",
        "from_version",
        "to_version",
        "state_entered_at",
        "last_error",
        "step_data",
    )
)


def _now_column(sql_clock: bool) -> ColumnElement[datetime]:
    """The time a statement compares with: Postgres' ``clock_timestamp()`` read once (a CTE
    ``t``), or the parameter ``at`` (a runtime with a clock of its own; SQLite)."""
    if sql_clock:
        return select(func.clock_timestamp(type_=UTCDateTime()).label("now")).cte("t").c.now
    return bindparam("at", type_=UTCDateTime())


@functools.lru_cache(maxsize=4)
def _take_statement(sql_clock: bool, expected: bool) -> Executable:
    """The lease's compare-and-set ``UPDATE`` (built once: parameters ``run_id``, ``owner``,
    ``lease``, ``expected``, ``at``), returning the run, the time it used, its policy's spec
    hash and removal, and its schedule's removal."""
    now = _now_column(sql_clock)
    conditions = [
        Run.id == bindparam("run_id"),
        Run.state.not_in([s.value for s in FINAL_STATES]),
        or_(Run.lease_expires_at.is_(None), Run.lease_expires_at < now),
        or_(Run.next_attempt_at.is_(None), Run.next_attempt_at <= now),
    ]
    if expected:
        conditions.append(Run.state == bindparam("expected"))

    def policy(column: InstrumentedAttribute[Any]) -> ColumnElement[Any]:
        found = select(column).where(PolicyRow.name == Run.policy_name)
        return found.correlate(Run).scalar_subquery()

    schedule_removed = (
        select(Schedule.removed_at)
        .where(Schedule.secret == Run.secret, Schedule.policy_name == Run.policy_name)
        .correlate(Run)
        .scalar_subquery()
    )
    return (
        update(Run)
        .where(*conditions)
        .values(
            lease_owner=bindparam("owner"),
            lease_expires_at=now + bindparam("lease", type_=Interval())
            if sql_clock
            else bindparam("expires", type_=UTCDateTime()),
            attempt=Run.attempt + 1,
            updated_at=now,
        )
        .returning(
            *_TAKEN_COLUMNS,
            now.label("lease_now"),
            policy(PolicyRow.spec_hash).label("policy_hash"),
            policy(PolicyRow.removed_at).label("policy_removed_at"),
            schedule_removed.label("schedule_removed_at"),
        )
    )


@functools.lru_cache(maxsize=2)
def _held_statement(sql_clock: bool) -> Executable:
    """Whether lease ``owner`` of run ``run_id`` is live (built once)."""
    return select(Run.id).where(
        Run.id == bindparam("run_id"),
        Run.lease_owner == bindparam("owner"),
        Run.lease_expires_at > _now_column(sql_clock),
    )


@functools.lru_cache(maxsize=64)
def _fused_commit(columns: tuple[str, ...], schedule: bool, audit: bool, carry: bool) -> TextClause:
    """The fused commit statement for the run columns set, with or without the schedule's and
    the audit record's parts, and (``carry``: the next lease taken) returning what the next
    step needs of its policy and schedule (cached: a handful of shapes)."""
    sets = ", ".join(f"{name} = :v_{name}" for name in columns)
    parts = [
        f"""r AS (
  UPDATE runs SET {sets}
  WHERE id = :run_id AND lease_owner = :owner AND state = :from_state
  RETURNING id
)""",
        """e AS (
  INSERT INTO run_events (run_id, at, step, from_state, to_state, outcome, attempt, worker,
                          message)
  SELECT id, :e_at, :e_step, :e_from_state, :e_to_state, :e_outcome, :e_attempt, :e_worker,
         :e_message
  FROM r
)""",
    ]
    if schedule:
        parts.append(
            """s AS (
  UPDATE schedules SET last_run_id = :run_id,
    last_rotated_at = CASE WHEN :s_rotated THEN :e_at ELSE last_rotated_at END,
    next_due_at = CASE WHEN removed_at IS NULL THEN :s_next_due ELSE next_due_at END
  WHERE secret = :s_secret AND policy_name = :s_policy AND EXISTS (SELECT 1 FROM r)
)"""
        )
    if audit:
        parts.append(append_sql("EXISTS (SELECT 1 FROM r)"))
    binds = [bindparam(f"v_{name}", type_=_RUN_COLUMNS[name].type) for name in columns]
    binds += [
        bindparam("e_at", type_=UTCDateTime()),
        bindparam("s_next_due", type_=UTCDateTime()),
        bindparam("s_rotated", type_=Boolean()),
    ]
    returned = "id"
    if carry:
        returned += f""",
  ({_POLICY_HASH}) AS policy_hash, ({_POLICY_REMOVED}) AS policy_removed_at,
  ({_SCHEDULE_REMOVED}) AS schedule_removed_at"""
    sql = "WITH " + ",\n".join(parts) + f"\nSELECT {returned} FROM r"
    present = [b for b in binds if f":{b.key}" in sql]
    return text(sql).bindparams(*present)


#: What a carried-over lease reads of the run's policy and schedule (as the lease take does).
_POLICY_HASH = "SELECT spec_hash FROM policies WHERE name = :c_policy"
_POLICY_REMOVED = "SELECT removed_at FROM policies WHERE name = :c_policy"
_SCHEDULE_REMOVED = (
    "SELECT removed_at FROM schedules WHERE secret = :c_secret AND policy_name = :c_policy"
)


def _governance(policy_name: str, secret: str) -> Executable:
    """The carried-over lease's read of the policy and schedule, as its own statement."""
    return text(
        f"SELECT ({_POLICY_HASH}) AS policy_hash, ({_POLICY_REMOVED}) AS policy_removed_at, "
        f"({_SCHEDULE_REMOVED}) AS schedule_removed_at"
    ).bindparams(c_policy=policy_name, c_secret=secret)


@dataclass(frozen=True)
class _Taken:
    """A lease just taken (or carried over by a commit): the run as the ledger has it, the
    lease's owner, when the ledger confirmed it (this host's monotonic clock), the database's
    time then, and its policy's spec hash and removal and its schedule's (None: no such row,
    or not removed)."""

    run: Run
    owner: str
    confirmed: float
    now: datetime
    policy_hash: str | None
    policy_removed_at: datetime | None
    schedule_removed_at: datetime | None


def _ended(final: RunState, now: datetime, message: str) -> dict[str, object]:
    """The run columns of a run ending in ``final`` at ``now`` because of ``message``."""
    return {
        "state": final.value,
        "state_entered_at": now,
        "finished_at": now,
        "last_error": message[:_MAX_ERROR_CHARS],
        "next_attempt_at": None,
        "enqueued_at": None,
    }


def _detached_run(columns: Mapping[Any, Any]) -> Run:
    """A detached Run holding what a step uses (``_TAKEN_COLUMNS`` of ``columns``), built
    without the ORM's attribute events."""
    run: Run = Run.__mapper__.class_manager.new_instance()
    run.__dict__.update({column.key: columns[column.key] for column in _TAKEN_COLUMNS})
    return run


def _moved_on(run: Run, values: Mapping[str, object]) -> Run:
    """``run`` as a commit that set ``values`` and kept or carried over the lease left it
    (an attempt of the next step)."""
    return _detached_run({**run.__dict__, **values, "attempt": 1})


def _carried(
    run: Run,
    values: dict[str, object],
    row: Mapping[Any, Any],
    owner: str,
    confirmed: float,
    now: datetime,
) -> _Taken:
    """The next step's lease as the commit that carried it over left the run."""
    return _Taken(
        _moved_on(run, values),
        owner,
        confirmed,
        now,
        row["policy_hash"],
        row["policy_removed_at"],
        row["schedule_removed_at"],
    )


def _removal(
    run: Run, policy_removed_at: datetime | None, schedule_removed_at: datetime | None
) -> str | None:
    """Why ``run``'s secret is governed no more (its policy, or its place in it, was removed
    for good), or None."""
    if policy_removed_at is not None:
        return f"policy {run.policy_name!r} was removed"
    if schedule_removed_at is not None:
        return f"policy {run.policy_name!r} no longer governs {run.secret!r}"
    return None


class _RunServices:
    """The engine's answers to a step's requests (StepServices), for one run."""

    def __init__(
        self, engine: Engine, run: Run, provider: Provider, owner: str | None = None
    ) -> None:
        self._engine = engine
        self._run = run
        self._provider = provider
        self._owner = owner

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
                    Run.state.in_([RunState.PROMOTED.value, RunState.ROLLING_BACK.value]),
                    Run.id != run.id,
                )
            ).all()
            if sum(1 for _, data in peers if data and data.get("slot")) >= concurrency:
                return False
            data = {**(run.step_data or {}), "slot": True}
            claimed = session.execute(
                update(Run)
                .where(Run.id == run.id, Run.lease_owner == self._owner)
                .values(step_data=data)
                .returning(Run.id)
            ).first()
            return claimed is not None
