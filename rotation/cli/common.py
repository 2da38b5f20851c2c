"""Shared helpers of the everyday commands: the runtime, one-line errors, times."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import click
from rich.console import Console
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, ProgrammingError

from rotation.errors import BackendUnavailable, ConfigurationError, KeyturnError
from rotation.ledger.db import DEFAULT_SQLITE_URL, Ledger, database_url
from rotation.run.runtime import Runtime

__all__ = [
    "OpsCommand",
    "OpsGroup",
    "echo_json",
    "fmt_age",
    "fmt_time",
    "ledger_error",
    "make_console",
    "open_runtime",
    "safe_url",
]


@contextmanager
def open_runtime() -> Iterator[Runtime]:
    """A Runtime over ``KEYTURN_DATABASE_URL`` and this process's providers, closed after use."""
    runtime = Runtime(Ledger(database_url()))
    try:
        yield runtime
    finally:
        runtime.close()


# --- one-line errors -----------------------------------------------------------------------

_CREDENTIALS_IN_URL = re.compile(r"(\w+://)[^/@\s]*@")


def safe_url(url: str) -> str:
    """The ledger URL without password, driver or query: ``postgresql://user@host:5432/db``."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return _CREDENTIALS_IN_URL.sub(r"\1", url)
    clean = URL.create(
        parsed.get_backend_name(),
        username=parsed.username or None,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
    )
    text: str = clean.render_as_string(hide_password=False)
    return text


def _first_line(exc: BaseException) -> str:
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip().splitlines()
    line = text[0] if text else type(original).__name__
    return _CREDENTIALS_IN_URL.sub(r"\1", line)


def ledger_error(exc: DBAPIError) -> KeyturnError:
    """A database error of the ledger as one clear line, no password, no SQL."""
    try:
        where = safe_url(database_url())
    except ConfigurationError:
        where = "KEYTURN_DATABASE_URL"
    detail = _first_line(exc)
    if ("does not exist" in detail and "relation" in detail) or "no such table" in detail:
        if where == DEFAULT_SQLITE_URL:
            return ConfigurationError(
                f"the embedded ledger at {where} is empty: `make run` (keyturn run) fills it with "
                "the demo; for your own ledger set KEYTURN_DATABASE_URL and run "
                "`keyturn db upgrade`"
            )
        return ConfigurationError(
            f"the ledger at {where} has no Keyturn tables: run `keyturn db upgrade` ({detail})"
        )
    if isinstance(exc, OperationalError):
        return BackendUnavailable(
            f"cannot reach the ledger at {where}: {detail} (check KEYTURN_DATABASE_URL)"
        )
    return BackendUnavailable(f"the ledger at {where} refused the request: {detail}")


class _OneLineUsage(click.UsageError):
    """A usage error printed as one line with a pointer to --help."""

    def __init__(self, original: click.UsageError) -> None:
        super().__init__(original.format_message(), original.ctx)

    def show(self, file: Any = None) -> None:
        hint = f" (see `{self.ctx.command_path} --help`)" if self.ctx is not None else ""
        click.echo(f"error: {self.message.rstrip('.')}{hint}", err=True)


class _OpsMixin:
    """Usage errors as one line; ledger errors as a KeyturnError (which KeyturnGroup prints)."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)  # type: ignore[misc,no-any-return]
        except click.UsageError as exc:
            if isinstance(exc, _OneLineUsage):
                raise
            raise _OneLineUsage(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)  # type: ignore[misc]
        except (OperationalError, ProgrammingError) as exc:
            raise ledger_error(exc) from None
        except click.UsageError as exc:
            if isinstance(exc, _OneLineUsage):
                raise
            raise _OneLineUsage(exc) from None


class OpsCommand(_OpsMixin, click.Command):
    """A command with one-line usage and ledger errors."""


class OpsGroup(_OpsMixin, click.Group):
    """A group whose subcommands are :class:`OpsCommand`."""

    command_class = OpsCommand

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            raise _OneLineUsage(exc) from None


# --- output --------------------------------------------------------------------------------


def make_console(stderr: bool = False) -> Console:
    """A console that keeps table rows whole in logs and pipes (160 columns off a terminal)."""
    console = Console(highlight=False, stderr=stderr)
    if not console.is_terminal:
        console.width = 160
    return console


def echo_json(data: object) -> None:
    import json

    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def fmt_time(at: datetime | None, empty: str = "-") -> str:
    """``2026-01-05 03:00`` (UTC, as every time Keyturn shows)."""
    return at.strftime("%Y-%m-%d %H:%M") if at is not None else empty


def fmt_age(delta: timedelta | None, empty: str = "-") -> str:
    """A compact duration, two units at most: ``29d 4h``, ``3h 12m``, ``45s``."""
    if delta is None:
        return empty
    seconds = int(abs(delta.total_seconds()))
    units: Sequence[tuple[str, int]] = (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))
    parts: list[str] = []
    for unit, size in units:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
        elif parts:
            break  # 2d 0h 5m reads as 2d
        if len(parts) == 2:
            break
    text = " ".join(parts) or "0s"
    return f"-{text}" if delta.total_seconds() < 0 else text


def fmt_relative(at: datetime | None, now: datetime, empty: str = "-") -> str:
    """``in 3d 2h`` or ``5m ago``."""
    if at is None:
        return empty
    delta = at - now
    return f"in {fmt_age(delta)}" if delta.total_seconds() >= 0 else f"{fmt_age(-delta)} ago"
