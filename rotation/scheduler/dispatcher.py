"""The dispatcher tick: sync policies, start runs for due secrets, re-enqueue stalled runs.

Postgres is the clock: due-ness is ``schedules.next_due_at``, claimed with a conditional UPDATE
against the database's time (the runtime's clock), so two beats (or two ticks at once) never
start the same rotation twice, and neither a restarted beat nor a worker whose clock runs ahead
fires early. Every query here is indexed and touches only due rows. Each tick records itself in
``dispatcher_ticks`` (``rotation.ledger.ticks``).

Nothing is deleted when a policy or a secret goes away: its absence is noted (``missing_since``)
and acted on only once it lasted ``removal_grace`` (``removed_at``); a removed schedule keeps its
``last_rotated_at``, so a policy that comes back resumes its history. A glob listing that comes
back short removes nothing: a scheduled secret it lacks is read directly, and kept if it exists.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rotation.access.anchor import maybe_anchor
from rotation.config import AnchorSettings
from rotation.errors import PolicyError, SecretNotFound
from rotation.ledger.locks import POLICY_SYNC, xact_lock
from rotation.ledger.models import PolicyRow, Run, Schedule
from rotation.ledger.ticks import record_tick
from rotation.policy import Policy, load_policies
from rotation.policy.due import in_window, next_due, next_window_start
from rotation.run.runtime import Runtime
from rotation.run.states import RunState
from rotation.scheduler.expiry import EXPIRY_REFRESH, refresh_expiries, waits_for_expiry

__all__ = ["Dispatcher", "TickReport", "new_run"]

log = logging.getLogger("keyturn.dispatcher")

_OPEN_STATES_SQL = "runs.state NOT IN ('succeeded', 'failed', 'needs_attention')"
_ACTIVE_STATES_SQL = "runs.state NOT IN ('succeeded', 'failed')"


@dataclass
class TickReport:
    """Runs to enqueue (``(run_id, state)``) and what the tick did."""

    enqueue: list[tuple[int, str]] = field(default_factory=list)
    started: int = 0
    recovered: int = 0
    deferred: int = 0
    expiries_read: int = 0
    synced: bool = False
    errors: list[PolicyError] = field(default_factory=list)


def pending_run(
    *, secret: str, policy_row: PolicyRow, policy: Policy, trigger: str, actor: str, now: datetime
) -> Run:
    """A new run in ``pending``, not yet added to any session."""
    return Run(
        secret=secret,
        policy_name=policy_row.name,
        provider=policy.provider,
        trigger=trigger,
        actor=actor,
        state=RunState.PENDING.value,
        attempt=0,
        max_attempts=policy.max_attempts,
        token=uuid.uuid4().hex,
        created_at=now,
        updated_at=now,
        state_entered_at=now,
        enqueued_at=now,
    )


def new_run(
    session: Session,
    *,
    secret: str,
    policy_row: PolicyRow,
    policy: Policy,
    trigger: str,
    actor: str,
    now: datetime,
) -> Run | None:
    """Insert a pending run unless the secret already has an active one (then None)."""
    run = pending_run(
        secret=secret, policy_row=policy_row, policy=policy, trigger=trigger, actor=actor, now=now
    )
    try:
        with session.begin_nested():
            session.add(run)
            session.flush()
    except IntegrityError:
        return None
    return run


def _source_file(source: str) -> str:
    """``schedules/a.yaml:3`` -> ``schedules/a.yaml``."""
    path, _, line = source.rpartition(":")
    return str(Path(path if path and line.isdigit() else source))


class Dispatcher:
    """One tick of the scheduler; safe to run from any number of processes at once."""

    def __init__(
        self,
        runtime: Runtime,
        schedules_dir: str | Path,
        *,
        batch: int = 1000,
        busy_batch: int = 10,
        redeliver_after: timedelta = timedelta(seconds=60),
        glob_refresh: timedelta = timedelta(minutes=5),
        removal_grace: timedelta = timedelta(minutes=15),
        expiry_refresh: timedelta = EXPIRY_REFRESH,
    ) -> None:
        self.runtime = runtime
        self.schedules_dir = Path(schedules_dir)
        self.batch = batch
        self.busy_batch = busy_batch
        self.redeliver_after = redeliver_after
        self.glob_refresh = glob_refresh
        self.removal_grace = removal_grace
        self.expiry_refresh = expiry_refresh
        self._signature: tuple[tuple[str, int, int], ...] | None = None
        self._last_sync: datetime | None = None
        self._reported_errors: set[str] = set()

    def tick(self) -> TickReport:
        report = TickReport()
        now = self.runtime.clock()
        with self.runtime.ledger.transaction() as session:
            record_tick(session, now, self.runtime.worker_id)
        self.sync_policies(now, report)
        self.refresh_expiries(now, report)
        self.start_due_runs(now, report)
        self.recover_stalled(now, report)
        maybe_anchor(self.runtime.ledger, AnchorSettings.from_env(), self.runtime.worker_id)
        return report

    # --- 1. policies ---------------------------------------------------------------------

    def _files_signature(self) -> tuple[tuple[str, int, int], ...]:
        if self.schedules_dir.is_file():
            paths = [self.schedules_dir]
        else:
            paths = sorted(p for p in self.schedules_dir.glob("*") if p.suffix in (".yaml", ".yml"))
        signature = []
        for path in paths:
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            signature.append((str(path), st.st_mtime_ns, st.st_size))
        return tuple(signature)

    def sync_policies(self, now: datetime, report: TickReport | None = None) -> None:
        """Bring ``policies`` and ``schedules`` in line with the files, on change only."""
        signature = self._files_signature()
        stale = self._last_sync is None or now - self._last_sync >= self.glob_refresh
        if signature == self._signature and not stale:
            return
        loaded = load_policies(self.schedules_dir)
        for error in loaded.errors:
            if str(error) not in self._reported_errors:
                self._reported_errors.add(str(error))
                log.error(
                    "invalid policy file, its policies are left as they were: %s",
                    error,
                    extra={"action": "policy.invalid", "file": error.file},
                )
        broken_files = {str(Path(e.file)) for e in loaded.errors}
        try:
            self._write_policies(loaded.policies, broken_files, now, refresh_globs=stale)
        except IntegrityError:  # another process synced the same change first
            log.info(
                "policy sync raced another dispatcher; retrying next tick",
                extra={"action": "policy.sync_raced"},
            )
            return
        self._signature = signature
        if stale:
            self._last_sync = now
        if report is not None:
            report.synced = True
            report.errors = list(loaded.errors)

    def _write_policies(
        self, policies: list[Policy], broken_files: set[str], now: datetime, *, refresh_globs: bool
    ) -> None:
        with self.runtime.ledger.transaction() as session:
            xact_lock(session, POLICY_SYNC)
            rows = {row.name: row for row in session.scalars(select(PolicyRow))}
            wanted = {p.name: p for p in policies}
            changed: list[Policy] = []
            for policy in policies:
                row = rows.get(policy.name)
                if row is None or row.spec_hash != policy.spec_hash:
                    changed.append(policy)
                    self._upsert_policy(session, row, policy, now)
                elif row.missing_since is not None or row.removed_at is not None:
                    changed.append(policy)  # back: its schedules are restored
                    row.missing_since = row.removed_at = None
                    log.info("policy back", extra={"action": "policy.back", "policy": policy.name})
            for name, row in rows.items():
                if name not in wanted and _source_file(row.source) not in broken_files:
                    self._absent_policy(session, row, now)
            session.flush()
            self._sync_schedules(session, policies, changed, rows, now, refresh_globs=refresh_globs)

    def _absent_policy(self, session: Session, row: PolicyRow, now: datetime) -> None:
        """Note a policy missing from the files; remove it once that lasted the grace."""
        if row.removed_at is not None:
            return
        if row.missing_since is None:
            row.missing_since = now
            log.warning(
                "policy missing from the files; removed if still missing after %s",
                self.removal_grace,
                extra={"action": "policy.missing", "policy": row.name},
            )
            return
        if now - row.missing_since < self.removal_grace:
            return
        row.removed_at = now
        session.execute(
            update(Schedule)
            .where(Schedule.policy_name == row.name, Schedule.removed_at.is_(None))
            .values(removed_at=now, next_due_at=None)
        )
        log.info("policy removed", extra={"action": "policy.removed", "policy": row.name})

    def _upsert_policy(
        self, session: Session, row: PolicyRow | None, policy: Policy, now: datetime
    ) -> None:
        spec = policy.to_spec()
        source = policy.source or str(self.schedules_dir)
        if row is None:
            session.add(
                PolicyRow(
                    name=policy.name,
                    source=source,
                    spec=spec,
                    spec_hash=policy.spec_hash,
                    paused=policy.paused,
                    updated_at=now,
                )
            )
        else:
            row.source, row.spec, row.spec_hash = source, spec, policy.spec_hash
            row.paused, row.updated_at = policy.paused, now
            row.missing_since = row.removed_at = None
        log.info("policy synced", extra={"action": "policy.synced", "policy": policy.name})

    def _secrets_of(self, policy: Policy) -> list[str]:
        exact = [p for p in policy.patterns if not Policy.is_glob(p)]
        if len(exact) == len(policy.patterns):
            return exact
        names = self.runtime.provider(policy.provider).list()
        return sorted({n for n in names if policy.matches(n)} | set(exact))

    def _still_exists(self, policy: Policy, secret: str) -> bool:
        """Whether a secret a glob listing lacked is really gone (read it; unsure: keep it)."""
        try:
            self.runtime.provider(policy.provider).read(secret)
        except SecretNotFound:
            return False
        except Exception:
            return True
        return True

    def _sync_schedules(
        self,
        session: Session,
        policies: Iterable[Policy],
        changed: list[Policy],
        rows: dict[str, PolicyRow],
        now: datetime,
        *,
        refresh_globs: bool,
    ) -> None:
        changed_names = {p.name for p in changed}
        for policy in policies:
            if policy.name not in changed_names and not refresh_globs:
                continue
            try:
                secrets = set(self._secrets_of(policy))
            except Exception as exc:  # the backend is down: try again at the next refresh
                log.warning(
                    "cannot list secrets for policy %s: %s",
                    policy.name,
                    type(exc).__name__,
                    extra={"action": "policy.list_failed", "policy": policy.name},
                )
                continue
            mine = select(Schedule).where(Schedule.policy_name == policy.name)
            owned = {s.secret: s for s in session.scalars(mine)}
            for secret, schedule in owned.items():  # a short listing never removes a schedule
                if (
                    secret not in secrets
                    and schedule.removed_at is None
                    and policy.matches(secret)
                    and self._still_exists(policy, secret)
                ):
                    secrets.add(secret)
            existing = {
                s.secret: s
                for s in session.scalars(select(Schedule).where(Schedule.secret.in_(secrets)))
            }
            for secret in sorted(secrets):
                self._claim(session, policy, secret, existing.get(secret), rows, changed_names, now)
            for secret, schedule in owned.items():
                if secret not in secrets:
                    self._absent_schedule(schedule, now)

    def _claim(
        self,
        session: Session,
        policy: Policy,
        secret: str,
        schedule: Schedule | None,
        rows: dict[str, PolicyRow],
        changed_names: set[str],
        now: datetime,
    ) -> None:
        """``policy`` governs ``secret``: create, restore, adopt or reschedule its schedule."""
        if schedule is None:
            session.add(
                Schedule(
                    secret=secret,
                    policy_name=policy.name,
                    next_due_at=next_due(policy, secret, None, now),
                )
            )
            return
        if schedule.policy_name != policy.name:
            owner = rows.get(schedule.policy_name)
            gone = owner is None or owner.missing_since is not None or owner.removed_at is not None
            if not (gone or schedule.removed_at is not None):
                log.error(
                    "secret %s is claimed by policies %s and %s; keeping %s",
                    secret,
                    schedule.policy_name,
                    policy.name,
                    schedule.policy_name,
                    extra={"action": "policy.conflict", "secret": secret},
                )
                return
            # its policy went away: adopt it, history and all
            log.info(
                "secret %s moves from policy %s to %s",
                secret,
                schedule.policy_name,
                policy.name,
                extra={"action": "policy.adopted", "secret": secret},
            )
            schedule.policy_name = policy.name
            self._restore(session, policy, schedule, now)
        elif schedule.removed_at is not None or schedule.missing_since is not None:
            self._restore(session, policy, schedule, now)
        elif policy.name in changed_names and schedule.next_due_at is not None:
            schedule.next_due_at = next_due(
                policy, secret, schedule.last_rotated_at, now, schedule.expires_at
            )

    def _restore(self, session: Session, policy: Policy, schedule: Schedule, now: datetime) -> None:
        """A schedule governed again: due from its last rotation, unless a run holds it."""
        was_removed = schedule.removed_at is not None
        schedule.missing_since = schedule.removed_at = None
        held = session.scalar(
            select(Run.id).where(Run.secret == schedule.secret, text(_ACTIVE_STATES_SQL)).limit(1)
        )
        if held is None and (was_removed or schedule.next_due_at is not None):
            schedule.next_due_at = next_due(
                policy, schedule.secret, schedule.last_rotated_at, now, schedule.expires_at
            )

    def _absent_schedule(self, schedule: Schedule, now: datetime) -> None:
        """Note a secret its policy no longer claims; remove it once that lasted the grace."""
        if schedule.removed_at is not None:
            return
        if schedule.missing_since is None:
            schedule.missing_since = now
        elif now - schedule.missing_since >= self.removal_grace:
            schedule.removed_at = now
            schedule.next_due_at = None
            log.info(
                "schedule removed",
                extra={"action": "schedule.removed", "secret": schedule.secret},
            )

    # --- 1b. expiries (kinds whose credentials expire) ------------------------------------

    def refresh_expiries(self, now: datetime, report: TickReport | None = None) -> int:
        """Record when current credentials expire (``rotation.scheduler.expiry``)."""
        try:
            read = refresh_expiries(self.runtime, now, refresh=self.expiry_refresh)
        except Exception as exc:  # never let a backend stop the tick
            log.warning(
                "cannot refresh credential expiries: %s",
                type(exc).__name__,
                extra={"action": "expiry.refresh_failed"},
            )
            return 0
        if report is not None:
            report.expiries_read += read
        return read

    # --- 2. due runs ---------------------------------------------------------------------

    def start_due_runs(self, now: datetime, report: TickReport | None = None) -> list[int]:
        """Create a run for every due, unpaused, in-window secret; returns the new run ids."""
        started: list[int] = []
        with self.runtime.ledger.transaction() as session:
            due = session.execute(
                select(
                    Schedule.secret, PolicyRow, Schedule.expiry_checked_at, Schedule.last_rotated_at
                )
                .join(PolicyRow, PolicyRow.name == Schedule.policy_name)
                .where(
                    Schedule.next_due_at <= now,
                    Schedule.missing_since.is_(None),
                    Schedule.removed_at.is_(None),
                    PolicyRow.paused.is_(False),
                    PolicyRow.missing_since.is_(None),
                    PolicyRow.removed_at.is_(None),
                )
                .order_by(Schedule.next_due_at)
                .limit(self.batch)
            ).all()
            claimable: dict[str, tuple[PolicyRow, Policy]] = {}
            for secret, row, expiry_checked_at, last_rotated_at in due:
                policy = self.runtime.policy(row)
                if waits_for_expiry(policy, expiry_checked_at, last_rotated_at):
                    continue  # its due time is provisional until the expiry is read
                if in_window(policy, now):
                    claimable[secret] = (row, policy)
                    continue
                session.execute(
                    update(Schedule)
                    .where(Schedule.secret == secret, Schedule.next_due_at <= now)
                    .values(next_due_at=next_window_start(policy, now))
                )
                if report is not None:
                    report.deferred += 1
            if claimable:
                claimed = session.scalars(
                    update(Schedule)
                    .where(Schedule.secret.in_(claimable), Schedule.next_due_at <= now)
                    .values(next_due_at=None)
                    .returning(Schedule.secret)
                ).all()
                started = self._insert_runs(session, claimed, claimable, now)
        for run_id in started:
            log.info("run started", extra={"action": "run.started", "run_id": run_id})
        if report is not None:
            report.started += len(started)
            report.enqueue.extend((run_id, RunState.PENDING.value) for run_id in started)
        return started

    @staticmethod
    def _insert_runs(
        session: Session,
        secrets: Sequence[str],
        claimable: dict[str, tuple[PolicyRow, Policy]],
        now: datetime,
    ) -> list[int]:
        """One batched INSERT; if a manual run took one of the secrets meanwhile (the unique
        index refuses it), fall back to one savepoint per run and skip that secret."""
        runs = [
            pending_run(
                secret=s,
                policy_row=claimable[s][0],
                policy=claimable[s][1],
                trigger="schedule",
                actor="scheduler",
                now=now,
            )
            for s in secrets
        ]
        try:
            with session.begin_nested():
                session.add_all(runs)
                session.flush()
            return [run.id for run in runs]
        except IntegrityError:
            started = []
            for secret in secrets:
                row, policy = claimable[secret]
                run = new_run(
                    session,
                    secret=secret,
                    policy_row=row,
                    policy=policy,
                    trigger="schedule",
                    actor="scheduler",
                    now=now,
                )
                if run is not None:
                    started.append(run.id)
            return started

    # --- 3. crash recovery ---------------------------------------------------------------

    def recover_stalled(self, now: datetime, report: TickReport | None = None) -> list[int]:
        """Re-enqueue open runs that are ready, unleased, and not enqueued recently, oldest
        first.

        While workers are moving runs (a run changed within the redelivery window), a stale
        run is more likely queued behind the work (a mass rotation whose queue takes longer
        than the window to drain) than lost: at most ``busy_batch`` are sent again per tick,
        so the duplicates do not crowd out the work. When nothing moves, up to ``batch``."""
        cutoff = now - self.redeliver_after
        ready = (
            text(_OPEN_STATES_SQL),
            (Run.next_attempt_at.is_(None)) | (Run.next_attempt_at <= now),
            (Run.lease_expires_at.is_(None)) | (Run.lease_expires_at < now),
            (Run.enqueued_at.is_(None)) | (Run.enqueued_at < cutoff),
        )
        with self.runtime.ledger.sessions() as session:
            moved = session.scalar(select(func.max(Run.updated_at)).where(text(_OPEN_STATES_SQL)))
        limit = self.busy_batch if moved is not None and moved >= cutoff else self.batch
        with self.runtime.ledger.transaction() as session:
            candidates = (
                select(Run.id)
                .where(*ready)
                .order_by(Run.enqueued_at.asc().nulls_first())
                .limit(limit)
            )
            if self.runtime.ledger.dialect == "postgresql":
                candidates = candidates.with_for_update(skip_locked=True)
            # chosen first, then updated: a LIMIT inside the UPDATE's IN (...) was not kept
            chosen = list(session.scalars(candidates))
            rows = (
                session.execute(
                    update(Run)
                    .where(Run.id.in_(chosen), *ready)
                    .values(enqueued_at=now)
                    .returning(Run.id, Run.state)
                ).all()
                if chosen
                else []
            )
        if report is not None:
            report.recovered += len(rows)
            report.enqueue.extend((run_id, state) for run_id, state in rows)
        return [run_id for run_id, _ in rows]
