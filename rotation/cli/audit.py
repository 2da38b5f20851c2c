"""``keyturn audit tail|verify|anchor``: read and check the hash-chained audit trail (never
values), and anchor its head outside the ledger."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from rotation.access import anchor, audit
from rotation.access.guard import authorize_audited
from rotation.access.roles import Permission
from rotation.config import AnchorSettings
from rotation.errors import BackendUnavailable, ConfigurationError
from rotation.ledger.db import Ledger, database_url

if TYPE_CHECKING:
    from rotation.ledger.models import AuditRecord

__all__ = ["audit_group"]

_OUTCOME_STYLE = {"ok": "green", "started": "cyan", "denied": "red"}


@click.group("audit")
def audit_group() -> None:
    """The audit trail in the ledger (KEYTURN_DATABASE_URL)."""


@contextmanager
def _ledger(action: str) -> Iterator[Ledger]:
    """The ledger, after checking the actor may read the audit trail; errors as one line."""
    from sqlalchemy.exc import OperationalError, ProgrammingError, SQLAlchemyError

    ledger = Ledger(database_url())
    try:
        authorize_audited(Permission.AUDIT, action, sink=audit.LedgerAuditSink(ledger))
        yield ledger
    except (ProgrammingError, OperationalError) as exc:
        if "audit_records" in str(exc.orig):
            raise ConfigurationError(
                "The ledger has no audit_records table: run `keyturn db upgrade`."
            ) from None
        raise BackendUnavailable(f"Cannot read the ledger: {type(exc.orig).__name__}.") from None
    except SQLAlchemyError as exc:
        raise BackendUnavailable(f"Cannot read the ledger: {type(exc).__name__}.") from None
    finally:
        ledger.dispose()


def _console() -> Console:
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=200)


def _table(records: Sequence[AuditRecord], *, header: bool = True) -> Table:
    table = Table(show_header=header, header_style="bold", box=None, pad_edge=False)
    for column in ("seq", "at (UTC)", "actor", "action", "secret", "version", "run", "outcome"):
        table.add_column(column, no_wrap=True)
    table.add_column("detail", overflow="fold")
    for r in records:
        style = _OUTCOME_STYLE.get(r.outcome, "yellow" if r.outcome.startswith("error") else "")
        table.add_row(
            str(r.seq),
            f"{r.at:%Y-%m-%d %H:%M:%S}",
            r.actor,
            r.action,
            r.secret or "-",
            r.version_id or "-",
            str(r.run_id) if r.run_id is not None else "-",
            f"[{style}]{r.outcome}[/]" if style else r.outcome,
            r.detail or "",
        )
    return table


@click.command("tail")
@click.option("-n", "--lines", "limit", default=20, show_default=True, type=click.IntRange(1))
@click.option("--secret", default=None, help="Only records about this secret.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new records (Ctrl-C stops).")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(0.05))
@click.option("--max-polls", default=0, hidden=True, type=int, help="Stop following (tests).")
def tail_command(
    limit: int, secret: str | None, follow: bool, interval: float, max_polls: int
) -> None:
    """The last records, oldest first; with --follow, then every new one."""
    console = _console()
    with _ledger("audit.tail") as ledger:
        with ledger.sessions() as session:
            records = audit.tail(session, limit, secret)
            last_seq = max((r.seq for r in records), default=0)
            if follow:
                newest = audit.tail(session, 1)
                last_seq = max(last_seq, newest[0].seq if newest else 0)
        if records:
            console.print(_table(records))
        elif not follow:
            console.print("no audit records" + (f" for {secret!r}" if secret else ""))
        polls = 0
        try:
            while follow and (not max_polls or polls < max_polls):
                time.sleep(interval)
                polls += 1
                with ledger.sessions() as session:
                    new = audit.tail(session, 1000, secret, after_seq=last_seq)
                if new:
                    console.print(_table(new, header=not records))
                    records, last_seq = new, new[-1].seq
        except KeyboardInterrupt:
            pass


@click.command("verify")
def verify_command() -> None:
    """Check the hash chain, then the chain against its signed anchors (KEYTURN_AUDIT_ANCHOR_FILE);
    exit 1 naming every edited, inserted or deleted record, and newest records deleted since the
    latest anchor."""
    settings = AnchorSettings.from_env()
    anchors = anchor.read_anchors(settings)  # a bad key setting fails before the ledger is read
    with _ledger("audit.verify") as ledger, ledger.sessions() as session:
        report = audit.verify(session)
        checked = anchor.check(session, anchors, report.head_seq) if anchors else None
    for problem in report.problems:
        click.echo(f"TAMPERED {problem}")
    if checked is not None:
        for line in checked.problems:
            click.echo(f"TAMPERED {line}")
    if report.ok and (checked is None or checked.ok):
        click.echo(
            f"ok: {report.records} records, chain intact; head seq {report.head_seq} "
            f"hash {report.head_hash}"
        )
        click.echo(_anchor_note(settings, checked))
        return
    if not report.ok:
        first = report.problems[0]
        click.echo(
            f"error: the audit trail was tampered with: {len(report.problems)} broken link(s) "
            f"in {report.records} records; first at record id={first.id} seq={first.seq} "
            f"({first.kind})",
            err=True,
        )
    if checked is not None and not checked.ok:
        click.echo(
            f"error: the audit trail does not match its anchors: {checked.problems[0]}", err=True
        )
    sys.exit(1)


def _anchor_note(settings: AnchorSettings, checked: anchor.AnchorCheck | None) -> str:
    if settings.file is None:
        return (
            "note: no anchors (KEYTURN_AUDIT_ANCHOR_FILE is not set): deleted newest records "
            "cannot be detected"
        )
    if checked is None or checked.latest is None:
        return f"note: no anchor in {settings.file} yet: deleted newest records cannot be detected"
    latest = checked.latest
    return (
        f"anchors: {checked.anchors} match; latest at {latest.when()} (seq {latest.seq}, "
        f"by {latest.by})"
    )


@click.command("anchor")
def anchor_command() -> None:
    """Append a signed anchor of the chain's head to KEYTURN_AUDIT_ANCHOR_FILE now."""
    settings = AnchorSettings.from_env()
    with _ledger("audit.anchor") as ledger:
        written = anchor.anchor_now(ledger, settings, f"cli@{socket.gethostname()}")
    click.echo(
        f"anchored head seq {written.seq} hash {written.hash} at {written.when()} "
        f"to {settings.file}"
    )


audit_group.add_command(tail_command)
audit_group.add_command(verify_command)
audit_group.add_command(anchor_command)
