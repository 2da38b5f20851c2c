"""Task definitions: each adapts one ``rotation`` call to Celery. Messages carry run ids,
states and secret names only; results carry no values."""

from __future__ import annotations

from typing import Any

from rotation.scheduler.tasks import ADVANCE, DISPATCH_DUE, MASS_PRIORITY, ROTATE_ALL, ROTATE_NOW
from rotation.scheduler.triggers import rotate_all as trigger_all
from rotation.scheduler.triggers import rotate_now as trigger_now
from worker.celery_app import SETTINGS, app
from worker.runtime import dispatcher, engine, runtime

#: A step's Celery limits, from the lease: the soft one raises SoftTimeLimitExceeded in a step
#: stuck past its budget (it is retried); the hard one kills the process before its lease
#: expires, so no other worker can take the run over while it still runs.
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
    """Run the next step of ``run_id`` (if its state is still ``state``), then chain the next."""
    outcome = engine().advance(int(run_id), state)
    if outcome.enqueue and outcome.state is not None:
        _send(outcome.run_id, outcome.state.value, advance.request.delivery_info.get("priority"))


@app.task(name=ROTATE_NOW, ignore_result=False)
def rotate_now(secret: str, actor: str = "api") -> dict[str, Any]:
    """Start a rotation of ``secret`` now; returns the active run's id if one exists."""
    triggered = trigger_now(runtime(), secret, actor=actor, trigger="api")
    if triggered.created:
        _send(triggered.run_id, triggered.state)
    return {"secret": secret, "run_id": triggered.run_id, "created": triggered.created}


@app.task(name=ROTATE_ALL, ignore_result=False)
def rotate_all(pattern: str, actor: str = "api") -> list[dict[str, Any]]:
    """``rotate_now`` for every scheduled secret matching ``pattern``."""
    out = []
    for triggered in trigger_all(runtime(), pattern, actor=actor, trigger="api"):
        if triggered.created:
            _send(triggered.run_id, triggered.state, MASS_PRIORITY)
        out.append(
            {"secret": triggered.secret, "run_id": triggered.run_id, "created": triggered.created}
        )
    return out
