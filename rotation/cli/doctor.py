"""``keyturn doctor``: check what a deployment needs, one line per check, exit 0 or 1.

The ledger, migrations, clock and backend checks are rotation/ops/doctor.py; the broker and the
workers are asked here, through a Celery app built from the settings (like ``cli/tasks.py``):
the core never imports Celery.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from rotation.cli.common import OpsCommand, make_console
from rotation.config import EngineSettings, FlowerSettings, RequestSettings
from rotation.ledger.db import Ledger
from rotation.ops.doctor import (
    Finding,
    Status,
    check_backends,
    check_clock,
    check_dispatcher,
    check_flower,
    check_ledger,
    check_requests,
    guarded,
    one_line,
)
from rotation.policy import default_schedules_dir
from rotation.run.runtime import Runtime, utcnow

STYLE = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "bold red", Status.SKIP: "dim"}


def _celery(settings: EngineSettings, timeout: float):  # type: ignore[no-untyped-def]
    from celery import Celery

    app = Celery("keyturn-doctor", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        broker_connection_timeout=timeout,
        broker_connection_retry=False,
        broker_connection_max_retries=0,
        broker_transport_options={"socket_connect_timeout": timeout, "socket_timeout": timeout},
        task_default_queue=settings.queue,
        accept_content=["json"],
    )
    return app


def check_broker(settings: EngineSettings, timeout: float) -> list[Finding]:
    from rotation.cli.common import safe_url

    where = safe_url(settings.broker_url)
    app = _celery(settings, timeout)
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=0, timeout=timeout)
    except Exception as exc:
        return [Finding("broker", Status.FAIL, f"cannot reach {where}: {one_line(exc)}")]
    finally:
        app.close()
    return [Finding("broker", Status.OK, f"{where} answers")]


def check_workers(settings: EngineSettings, timeout: float) -> list[Finding]:
    """A worker consuming Keyturn's queue answers Celery's inspect ping."""
    if settings.broker_url.startswith("sqla+"):
        return [
            Finding(
                "worker",
                Status.SKIP,
                "the embedded SQLite broker has no remote control (keyturn run starts its own)",
            )
        ]
    app = _celery(settings, timeout)
    try:
        queues = app.control.inspect(timeout=timeout).active_queues() or {}
        ours = sorted(
            name
            for name, consumed in queues.items()
            if any(q.get("name") == settings.queue for q in consumed or [])
        )
        pongs = app.control.ping(destination=ours, timeout=timeout) if ours else []
    finally:
        app.close()
    answered = sorted(name for reply in pongs for name in reply)
    if answered:
        return [
            Finding(
                "worker",
                Status.OK,
                f"{len(answered)} worker(s) on queue {settings.queue!r} answered ping: "
                + ", ".join(answered[:5])
                + (" ..." if len(answered) > 5 else ""),
            )
        ]
    if queues:
        return [
            Finding(
                "worker",
                Status.FAIL,
                f"{len(queues)} worker(s) answered, none consumes queue {settings.queue!r} "
                "(KEYTURN_QUEUE differs?)",
            )
        ]
    return [
        Finding(
            "worker",
            Status.FAIL,
            f"no worker answered within {timeout:g} s: start `celery -A worker worker` "
            "with this KEYTURN_BROKER_URL",
        )
    ]


@click.command("doctor", cls=OpsCommand)
@click.option(
    "--flower-url",
    metavar="URL",
    help="Probe this Flower: it must refuse requests without credentials.",
)
@click.option(
    "--schedules",
    type=click.Path(path_type=Path),
    help="Policy files, when the ledger has none yet (default $KEYTURN_SCHEDULES, ./schedules).",
)
@click.option("--timeout", default=5.0, show_default=True, type=click.FloatRange(0.5, 60))
def doctor_command(flower_url: str | None, schedules: Path | None, timeout: float) -> None:
    """Check what a deployment needs and say what to fix; changes nothing.

    The ledger (reachable, migrated to head), the clock against the database, the broker, a
    worker on Keyturn's queue (Celery inspect ping), every policy's backend with the
    permissions rotations need (read, write a pending version, list; asked without writing),
    and Flower's authentication. One line per check; exit 0 when nothing failed, 1 otherwise
    (a warning does not fail).

    \b
    Examples:
      keyturn doctor
      keyturn doctor --flower-url http://127.0.0.1:5555
    """
    settings = EngineSettings.from_env()
    runtime = Runtime(Ledger())
    findings: list[Finding] = []
    console = make_console()

    def show(new: list[Finding]) -> None:
        for finding in new:
            console.print(
                f"[{STYLE[finding.status]}]{finding.status.value:<4}[/]  "
                f"{finding.check:<40} {finding.detail}",
                soft_wrap=True,
                markup=True,
                highlight=False,
            )
        findings.extend(new)

    try:
        ledger = guarded("ledger", lambda: check_ledger(runtime.ledger))
        show(ledger)
        reachable = ledger[0].status is Status.OK
        if reachable:
            # this host's clock against the database's (the runtime's clock IS the database's)
            show(guarded("clock", lambda: check_clock(runtime.ledger, utcnow)))
            show(guarded("dispatcher", lambda: check_dispatcher(runtime.ledger, settings.tick)))
        else:
            show(
                [
                    Finding(check, Status.SKIP, "the ledger is unreachable")
                    for check in ("clock", "dispatcher")
                ]
            )
        show(guarded("broker", lambda: check_broker(settings, timeout)))
        if findings[-1].status is Status.OK:
            show(guarded("worker", lambda: check_workers(settings, timeout)))
        else:
            show([Finding("worker", Status.SKIP, "the broker is unreachable")])
        files = schedules or default_schedules_dir()
        show(guarded("backends", lambda: check_backends(runtime, files)))
        show(guarded("requests", lambda: check_requests(RequestSettings.from_env())))
        show(check_flower(flower_url, FlowerSettings.from_env(), timeout))
    finally:
        runtime.close()
    failed = [f for f in findings if f.status is Status.FAIL]
    warned = [f for f in findings if f.status is Status.WARN]
    if failed:
        console.print(f"[bold red]{len(failed)} check(s) failed[/], {len(warned)} warning(s)")
        sys.exit(1)
    console.print(f"[green]all checks passed[/], {len(warned)} warning(s)")
