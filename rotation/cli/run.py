"""``keyturn run``: the whole scheduler on one machine, with no external service.

Local encrypted store, SQLite ledger, a SQLite-backed Celery broker, one worker with embedded
beat, and the demo policies in ``schedules/demo``; prints each run's steps as they happen.

Its default data directory is ``.keyturn``, where every other command looks when no variable
says otherwise (the local store's ``KEYTURN_LOCAL_DIR`` and the ledger's default
``sqlite:///.keyturn/ledger.sqlite``): after ``make run``, ``keyturn status``, ``runs``,
``history``, ``plan`` and ``secrets`` in the same checkout see the demo.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from sqlalchemy import func, select

from rotation.client.manager import SecretsManager
from rotation.ledger.db import Ledger
from rotation.ledger.models import Run, RunEvent

DEMO_SECRETS = {
    "demo/api_key_ncbi": "initial-ncbi",
    "demo/api_key_openfda": "initial-openfda",
    "demo/oauth_token": "initial-token",
}
STYLE = {"ok": "green", "wait": "yellow", "retry": "yellow", "failed": "red"}


#: Where the other commands look by default (KEYTURN_LOCAL_DIR, the embedded ledger).
DEFAULT_DATA_DIR = ".keyturn"


def embedded_environment(data_dir: Path, schedules: Path) -> dict[str, str]:
    """The demo's settings: the store and the ledger where the other commands look for them."""
    env = dict(os.environ)
    env.setdefault("SECRETS_PROVIDER", "local")
    env.setdefault("KEYTURN_LOCAL_DIR", str(data_dir))
    env.setdefault("KEYTURN_DATABASE_URL", f"sqlite:///{data_dir / 'ledger.sqlite'}")
    env.setdefault("KEYTURN_BROKER_URL", f"sqla+sqlite:///{data_dir / 'broker.sqlite'}")
    env.setdefault("KEYTURN_SCHEDULES", str(schedules))
    env.setdefault("KEYTURN_TICK_SECONDS", "2")
    env.setdefault("KEYTURN_REDELIVER_SECONDS", "20")
    return env


@click.command("run")
@click.option("--seconds", default=60, show_default=True, help="Stop after this long (0 = never).")
@click.option(
    "--data-dir",
    default=DEFAULT_DATA_DIR,
    show_default=True,
    type=click.Path(),
    help="Store, ledger and broker files; the other commands find the default one unaided.",
)
@click.option("--schedules", default="schedules/demo", show_default=True, type=click.Path())
def run_command(seconds: int, data_dir: str, schedules: str) -> None:
    """Run worker + beat embedded and show rotations as they happen."""
    console = Console()
    data = Path(data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    env = embedded_environment(data, Path(schedules).resolve())
    os.environ.update(env)

    from rotation.ledger.migrate import upgrade

    upgrade(env["KEYTURN_DATABASE_URL"])
    manager = SecretsManager.from_env(env)
    existing = set(manager.list(prefix="demo/"))
    for name, value in DEMO_SECRETS.items():
        if name not in existing:
            manager.set(name, value)
    console.print(
        f"[bold]Keyturn embedded[/]: store {env['KEYTURN_LOCAL_DIR']}, ledger and broker in "
        f"{data}, policies from {env['KEYTURN_SCHEDULES']}"
    )
    celery = shutil.which("celery", path=str(Path(sys.executable).parent)) or "celery"
    worker = subprocess.Popen(
        [
            celery,
            "-A",
            "worker",
            "worker",
            "--beat",
            "--pool=solo",
            "--loglevel=WARNING",
            "--schedule",
            str(data / "celerybeat-schedule"),
        ],
        env=env,
    )
    ledger = Ledger(env["KEYTURN_DATABASE_URL"])
    with ledger.sessions() as session:
        last_event = session.scalar(select(func.max(RunEvent.id))) or 0
    deadline = time.monotonic() + seconds if seconds else None
    try:
        while deadline is None or time.monotonic() < deadline:
            if worker.poll() is not None:
                raise click.ClickException(f"the worker exited with status {worker.returncode}")
            last_event = _print_new_events(console, ledger, last_event)
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
    _print_new_events(console, ledger, last_event)
    _summary(console, ledger, manager)
    ledger.dispose()
    _next_steps(console, data, env)


def _next_steps(console: Console, data: Path, env: dict[str, str]) -> None:
    """How to look at what the demo did; the variables to export when they are not the defaults."""
    exports = {
        name: env[name]
        for name, default in (
            (
                "KEYTURN_DATABASE_URL",
                f"sqlite:///{Path(DEFAULT_DATA_DIR).resolve() / 'ledger.sqlite'}",
            ),
            ("KEYTURN_LOCAL_DIR", str(Path(DEFAULT_DATA_DIR).resolve())),
        )
        if env[name] != default
    }
    if exports:
        console.print("[bold]look around[/] (this data directory is not the default one):")
        for name, value in exports.items():
            console.print(f"  export {name}={value}", soft_wrap=True)
    else:
        console.print("[bold]look around[/]: the commands below read this demo's ledger and store")
    console.print("  keyturn status; keyturn runs; keyturn history demo/oauth_token; keyturn plan")


def _print_new_events(console: Console, ledger: Ledger, after: int) -> int:
    with ledger.sessions() as session:
        rows = session.execute(
            select(RunEvent, Run.secret)
            .join(Run, Run.id == RunEvent.run_id)
            .where(RunEvent.id > after)
            .order_by(RunEvent.id)
        ).all()
    for event, secret in rows:
        colour = STYLE.get(event.outcome, "white")
        note = f"  {event.message}" if event.message else ""
        console.print(
            f"{event.at:%H:%M:%S}  run {event.run_id:<4} {secret:<22} {event.step:<8} "
            f"{event.from_state} -> [{colour}]{event.to_state}[/]{note}",
            soft_wrap=True,
        )
        after = event.id
    return after


def _summary(console: Console, ledger: Ledger, manager: SecretsManager) -> None:
    with ledger.sessions() as session:
        counts = dict(session.execute(select(Run.state, func.count()).group_by(Run.state)).all())
    console.print(f"[bold]runs by state[/]: {counts or 'none yet'}")
    for name in manager.list(prefix="demo/"):
        console.print(f"  {name}: {len(manager.versions(name))} versions retained")
