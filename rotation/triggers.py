"""Manual triggers: start a run now for one secret, or for every secret matching a pattern."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from rotation.dispatcher import new_run
from rotation.errors import ConfigurationError, InvalidSecretName, PermissionDenied
from rotation.ledger.models import PolicyRow, Run, Schedule
from rotation.names import matches_pattern, validate_name
from rotation.roles import Permission, acting_as, authorize
from rotation.runtime import Runtime
from rotation.states import ACTIVE_STATES

__all__ = ["TRIGGERS", "Triggered", "matching_secrets", "rotate_all", "rotate_now"]

#: Who asked for a run: the scheduler, a person (CLI), or a program (Celery/Flower API).
TRIGGERS = ("schedule", "manual", "api")


@dataclass(frozen=True)
class Triggered:
    """The run that now rotates ``secret``; ``created`` is False when one was already active."""

    secret: str
    run_id: int
    created: bool
    state: str


def authorize_rotation(actor: str, permission: Permission, secret: str | None) -> None:
    """Check ``actor`` against the role bindings (when configured); audit a denial."""
    with acting_as(actor):
        try:
            authorize(permission, permission.value, secret)
        except PermissionDenied as exc:
            from rotation import audit  # audit builds on the ledger: imported only on a denial

            audit.record_denial(audit.default_sink(), exc, permission.value, secret)
            raise


def rotate_now(runtime: Runtime, secret: str, *, actor: str, trigger: str = "manual") -> Triggered:
    """Start a run for ``secret`` now, or return the active one; never starts a second."""
    validate_name(secret)
    authorize_rotation(actor, Permission.ROTATE, secret)
    if trigger not in TRIGGERS:
        raise ConfigurationError(f"Unknown trigger {trigger!r}; use one of {', '.join(TRIGGERS)}.")
    now = runtime.clock()
    with runtime.ledger.transaction() as session:
        active = session.execute(
            select(Run.id, Run.state).where(
                Run.secret == secret, Run.state.in_([s.value for s in ACTIVE_STATES])
            )
        ).first()
        if active is not None:
            return Triggered(secret, active[0], False, active[1])
        schedule = session.execute(
            select(Schedule).where(Schedule.secret == secret).with_for_update()
        ).scalar_one_or_none()
        if schedule is None:
            raise ConfigurationError(
                f"No rotation policy governs secret {secret!r}: add it to a policy in "
                "schedules/*.yaml (check with `keyturn policies check`) and let beat sync it."
            )
        row = session.get(PolicyRow, schedule.policy_name)
        assert row is not None  # schedules cascade with their policy
        run = new_run(
            session,
            secret=secret,
            policy_row=row,
            policy=runtime.policy(row),
            trigger=trigger,
            actor=actor,
            now=now,
        )
        if run is None:  # a run started between our check and insert
            raced = session.execute(
                select(Run.id, Run.state).where(
                    Run.secret == secret, Run.state.in_([s.value for s in ACTIVE_STATES])
                )
            ).one()
            return Triggered(secret, raced[0], False, raced[1])
        schedule.next_due_at = None
        return Triggered(secret, run.id, True, run.state)


def matching_secrets(runtime: Runtime, pattern: str) -> list[str]:
    """Scheduled secrets containing ``pattern``, or matching it as a glob."""
    if not pattern or any(ord(c) < 32 for c in pattern):
        raise InvalidSecretName("rotate_all needs a non-empty pattern without control characters.")
    with runtime.ledger.sessions() as session:
        names = session.scalars(select(Schedule.secret).order_by(Schedule.secret)).all()
    return [n for n in names if matches_pattern(n, pattern)]


def rotate_all(
    runtime: Runtime, pattern: str, *, actor: str, trigger: str = "manual"
) -> list[Triggered]:
    """``rotate_now`` for every scheduled secret matching ``pattern`` (see ``matching_secrets``)."""
    authorize_rotation(actor, Permission.ROTATE_ALL, None)
    return [
        rotate_now(runtime, name, actor=actor, trigger=trigger)
        for name in matching_secrets(runtime, pattern)
    ]
