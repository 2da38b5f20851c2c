"""The names of the tasks workers serve (stable, shown in Flower). Senders (the CLI, beat,
scripts) use these with ``send_task``; ``worker/tasks.py`` defines them."""

from __future__ import annotations

__all__ = [
    "ADVANCE",
    "DISPATCH_DUE",
    "MANUAL",
    "MASS_PRIORITY",
    "RESOLVE",
    "ROLLBACK",
    "ROTATE_ALL",
    "ROTATE_NOW",
]

#: One dispatcher tick (beat sends it every ``KEYTURN_TICK_SECONDS``).
DISPATCH_DUE = "keyturn.dispatch_due"
#: ``advance(run_id, state)``: the next step of one run.
ADVANCE = "keyturn.advance"
# Manual requests take ``signed=<envelope>`` (rotation/access/requests.py); unsigned ones act as
# KEYTURN_API_PRINCIPAL.
#: ``rotate_now(secret)``: start a run now (or return the active one).
ROTATE_NOW = "keyturn.rotate_now"
#: ``rotate_all(pattern)``: ``rotate_now`` for every scheduled match.
ROTATE_ALL = "keyturn.rotate_all"
#: ``rollback(secret, retry_after_seconds)``: undo a promoted run.
ROLLBACK = "keyturn.rollback"
#: ``resolve(secret, how, retry_after_seconds)``: ``how`` is retry or abandon.
RESOLVE = "keyturn.resolve"
#: Each manual action (rotation/ops/manual.py) and the task that serves it.
MANUAL = {"rotate": ROTATE_NOW, "rotate_all": ROTATE_ALL, "rollback": ROLLBACK, "resolve": RESOLVE}
#: The message priority of a mass rotation's steps (``rotate-all``; Redis serves 0 first, 9
#: last): scheduled rotations (priority 0) keep running beside it instead of queueing behind
#: it. Each ``advance`` passes its own priority on to the run's next step.
MASS_PRIORITY = 6
