"""Task definitions: each adapts one ``rotation`` call to Celery. Messages carry run ids,
states and secret names only; results carry no values."""

from __future__ import annotations

from typing import Any

from rotation.ops.manual import handle
from rotation.scheduler.tasks import (
    ADVANCE,
    DISPATCH_DUE,
    MASS_PRIORITY,
    RESOLVE,
    ROLLBACK,
    ROTATE_ALL,
    ROTATE_NOW,
)
from worker.celery_app import SETTINGS, app
from worker.runtime import dispatcher, engine, runtime

#: A step's Celery limits, from the lease: the soft one raises SoftTimeLimitExceeded in a step
#: stuck past its budget (it is retried); the hard one kills the process before its lease
#: expires, so no other worker can take the run over while it still runs. Steps run by one
#: task share one budget from the task's start (``Engine.advance(follow=True)``), so every
#: lease the task takes outlives the hard limit.
STEP_LIMITS = SETTINGS.limits


def _send(run_id: int, state: str, priority: int | None = None) -> None:
    advance.apply_async((run_id, state), priority=priority)


@app.task(name=DISPATCH_DUE, ignore_result=True)
def dispatch_due() -> dict[str, int]:
    """One dispatcher tick: sync policies, start due runs, re-enqueue stalled ones."""
    report = dispatcher().tick()
    for run_id, state in report.enqueue:
        _send(run_id, state)
    return {"started": report.started, "recovered": report.recovered}


@app.task(
    name=ADVANCE,
    ignore_result=True,
    soft_time_limit=STEP_LIMITS.soft.total_seconds(),
    time_limit=STEP_LIMITS.hard.total_seconds(),
)
def advance(run_id: int, state: str | None = None) -> None:
    """Run the next step of ``run_id`` (if its state is still ``state``) and the steps due at
    once after it, within one step's time budget; then send the next, if any."""
    outcome = engine().advance(int(run_id), state, follow=True)
    if outcome.enqueue and outcome.state is not None:
        _send(outcome.run_id, outcome.state.value, advance.request.delivery_info.get("priority"))


def _serve(action: str, args: dict[str, Any], signed: object, actor: object) -> dict[str, Any]:
    claimed = actor if isinstance(actor, str) else None
    handled = handle(runtime(), action, args, signed=signed, claimed=claimed)
    # a mass rotation's steps go at a lower priority, so scheduled rotations run beside it
    priority = MASS_PRIORITY if action == "rotate_all" else None
    for run_id, state in handled.enqueue:
        _send(run_id, state, priority)
    return handled.answer


# Manual requests: ``signed`` is the sender's signed envelope (``keyturn`` sends one); without
# it the request acts as KEYTURN_API_PRINCIPAL, and an ``actor`` naming anyone else is refused.


@app.task(name=ROTATE_NOW, ignore_result=False)
def rotate_now(secret: str, actor: str | None = None, signed: object = None) -> dict[str, Any]:
    """Start a rotation of ``secret`` now; returns the active run's id if one exists."""
    return _serve("rotate", {"secret": secret}, signed, actor)


@app.task(name=ROTATE_ALL, ignore_result=False)
def rotate_all(
    pattern: str,
    since: str | None = None,
    actor: str | None = None,
    signed: object = None,
) -> dict[str, Any]:
    """``rotate_now`` for every scheduled secret matching ``pattern``; with ``since`` (an ISO
    time: ``keyturn rotate-all --since``) a secret whose run started since then and succeeded
    is answered with that run instead of a new one."""
    return _serve("rotate_all", {"pattern": pattern, "since": since}, signed, actor)


@app.task(name=ROLLBACK, ignore_result=False)
def rollback(
    secret: str,
    retry_after_seconds: float | None = None,
    actor: str | None = None,
    signed: object = None,
) -> dict[str, Any]:
    """Roll ``secret``'s promoted run back (see ``keyturn rollback``)."""
    return _serve(
        "rollback", {"secret": secret, "retry_after_seconds": retry_after_seconds}, signed, actor
    )


@app.task(name=RESOLVE, ignore_result=False)
def resolve(
    secret: str,
    how: str,
    retry_after_seconds: float | None = None,
    actor: str | None = None,
    signed: object = None,
) -> dict[str, Any]:
    """Retry or abandon (``how``) the run of ``secret`` that needs attention."""
    return _serve(
        "resolve",
        {"secret": secret, "how": how, "retry_after_seconds": retry_after_seconds},
        signed,
        actor,
    )
