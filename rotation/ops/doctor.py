"""``keyturn doctor``'s checks that need no Celery: the ledger and its migrations, the clock
against the database, every policy's backend and its permissions, the operator keys of manual
requests, Flower's authentication.

Each check returns :class:`Finding` lines: ``ok``, ``warn`` (works, but look), ``fail`` (fix
it: the line says what) or ``skip`` (not applicable here). Nothing is changed anywhere: backends
are asked what they would allow (rotation/providers/*/access.py), never written to. The broker
and worker checks live in the CLI, which alone may use Celery.
"""

from __future__ import annotations

import enum
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from rotation.access.requests import Keyring, load_private_key
from rotation.config import FlowerSettings, RequestSettings
from rotation.errors import KeyturnError
from rotation.ledger.db import Ledger
from rotation.ledger.migrate import alembic_config
from rotation.ledger.models import PolicyRow, Schedule
from rotation.ledger.ticks import last_tick
from rotation.policy import Policy, load_policies
from rotation.providers.base import ChecksAccess
from rotation.run.runtime import Clock, Runtime

__all__ = [
    "MAX_NAMES",
    "MAX_SKEW",
    "Finding",
    "Status",
    "check_backends",
    "check_clock",
    "check_dispatcher",
    "check_flower",
    "check_ledger",
    "check_requests",
    "guarded",
    "one_line",
    "safe_url",
    "worst",
]

#: Clock skew against the database beyond which due times and leases are off by too much.
MAX_SKEW = timedelta(seconds=5)
#: Secrets checked per backend (the first ones by name); enough to find a missing grant.
MAX_NAMES = 25
_CREDENTIALS_IN_URL = re.compile(r"(\w+://)[^/@\s]*@")


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Finding:
    """One line of ``keyturn doctor``."""

    check: str
    status: Status
    detail: str


def one_line(exc: BaseException) -> str:
    """An exception as one line, credentials in URLs masked."""
    if isinstance(exc, KeyturnError):
        return exc.message
    original = getattr(exc, "orig", None) or exc
    lines = str(original).strip().splitlines()
    line = lines[0] if lines else ""
    return _CREDENTIALS_IN_URL.sub(r"\1", f"{type(original).__name__}: {line}".rstrip(": "))


def guarded(check: str, run: Callable[[], list[Finding]]) -> list[Finding]:
    """``run()``, or one ``fail`` line if it raised."""
    try:
        return run()
    except Exception as exc:
        return [Finding(check, Status.FAIL, one_line(exc))]


def safe_url(url: str) -> str:
    try:
        rendered: str = make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "KEYTURN_DATABASE_URL"
    return rendered


# --- the ledger ------------------------------------------------------------------------------


def check_ledger(ledger: Ledger) -> list[Finding]:
    """Reachable, and migrated to the head revision this Keyturn ships."""
    where = safe_url(ledger.url)
    started = time.perf_counter()
    try:
        with ledger.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return [
            Finding("ledger", Status.FAIL, f"cannot reach {where}: {one_line(exc)}"),
            Finding("migrations", Status.SKIP, "the ledger is unreachable"),
        ]
    took = (time.perf_counter() - started) * 1000
    return [
        Finding("ledger", Status.OK, f"{where} answers ({took:.0f} ms)"),
        _migrations(ledger),
    ]


def _migrations(ledger: Ledger) -> Finding:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(ledger.url))
    heads = set(script.get_heads())
    known = {rev.revision for rev in script.walk_revisions()}
    with ledger.engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    head = ", ".join(sorted(heads))
    if not current:
        return Finding("migrations", Status.FAIL, "no Keyturn tables: run `keyturn db upgrade`")
    if current == heads:
        return Finding("migrations", Status.OK, f"at head {head}")
    at = ", ".join(sorted(current))
    if current - known:
        return Finding(
            "migrations",
            Status.FAIL,
            f"at {at}, which this Keyturn does not know (head {head}): a newer version "
            "migrated it; upgrade this installation",
        )
    return Finding("migrations", Status.FAIL, f"at {at}, head is {head}: run `keyturn db upgrade`")


def check_clock(ledger: Ledger, clock: Clock, max_skew: timedelta = MAX_SKEW) -> list[Finding]:
    """This host's clock against the database's (Postgres ``clock_timestamp()``)."""
    if ledger.dialect != "postgresql":
        return [Finding("clock", Status.SKIP, "the embedded SQLite ledger uses this host's clock")]
    with ledger.engine.connect() as conn:
        before = clock()
        database: datetime = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
        after = clock()
    here = before + (after - before) / 2
    skew = (here - database).total_seconds()
    give = (after - before).total_seconds() / 2
    direction = "ahead of" if skew > 0 else "behind"
    detail = f"this host is {abs(skew):.3f} s {direction} the database (± {give:.3f} s)"
    if abs(skew) - give > max_skew.total_seconds():
        return [
            Finding(
                "clock",
                Status.FAIL,
                f"{detail}: more than {max_skew.total_seconds():g} s; fix NTP on this host or "
                "the database's",
            )
        ]
    return [Finding("clock", Status.OK, detail)]


def check_dispatcher(ledger: Ledger, tick: timedelta) -> list[Finding]:
    """The dispatcher's last tick (``dispatcher_ticks``, database time): beat sends a tick every
    ``tick`` and a worker runs it; none for 12 ticks (at least a minute) means one is down."""
    last = last_tick(ledger)
    if last is None:
        return [
            Finding(
                "dispatcher",
                Status.FAIL,
                "no dispatcher tick was ever recorded: start `celery -A worker beat` and a worker",
            )
        ]
    age = ledger.now() - last.at
    limit = max(timedelta(minutes=1), 12 * tick)
    detail = f"last tick {age.total_seconds():.0f} s ago, by {last.by}"
    if age > limit:
        return [
            Finding(
                "dispatcher",
                Status.FAIL,
                f"{detail}: more than {limit.total_seconds():g} s; is beat running, and a worker "
                "on its queue?",
            )
        ]
    return [Finding("dispatcher", Status.OK, detail)]


# --- backends --------------------------------------------------------------------------------


def _secrets_by_backend(runtime: Runtime, schedules: Path | None) -> dict[str, list[str]]:
    """backend alias -> the secrets its policies govern (names; globs as their listing)."""
    found: dict[str, set[str]] = {}
    try:
        with runtime.ledger.sessions() as session:
            rows = session.execute(
                select(Schedule.secret, PolicyRow.spec).join(
                    PolicyRow, PolicyRow.name == Schedule.policy_name
                )
            ).all()
            policies = session.scalars(select(PolicyRow.spec)).all()
        for spec in policies:
            found.setdefault(spec.get("provider") or runtime.default_provider, set())
        for secret, spec in rows:
            found.setdefault(spec.get("provider") or runtime.default_provider, set()).add(secret)
    except SQLAlchemyError:
        if schedules is None:
            raise
    if not found and schedules is not None and schedules.exists():  # the policy files then
        for policy in load_policies(schedules).policies:
            names = found.setdefault(policy.provider or runtime.default_provider, set())
            names.update(p for p in policy.patterns if not Policy.is_glob(p))
    return {alias: sorted(names) for alias, names in sorted(found.items())}


def check_backends(runtime: Runtime, schedules: Path | None = None) -> list[Finding]:
    """For each backend a policy uses: read, write a pending version and list, as the backend
    reports them without a write."""
    by_backend = _secrets_by_backend(runtime, schedules)
    if not by_backend:
        return [Finding("backends", Status.SKIP, "no policy yet: nothing to check")]
    findings: list[Finding] = []
    for alias, secrets in by_backend.items():
        findings.extend(guarded(f"backend {alias}", partial(_backend, runtime, alias, secrets)))
    return findings


def _backend(runtime: Runtime, alias: str, secrets: Sequence[str]) -> list[Finding]:
    provider = runtime.provider(alias)
    if not isinstance(provider, ChecksAccess):
        return [
            Finding(
                f"backend {alias}",
                Status.SKIP,
                f"{type(provider).__name__} cannot report its permissions (no check_access)",
            )
        ]
    names = list(secrets[:MAX_NAMES])
    scope = f"{len(names)} of {len(secrets)} secrets" if len(secrets) > len(names) else None
    findings = []
    for check in provider.check_access(names):
        status = {True: Status.OK, False: Status.FAIL, None: Status.WARN}[check.allowed]
        detail = check.detail if scope is None else f"{check.detail} ({scope})"
        findings.append(Finding(f"backend {alias}: {check.permission}", status, detail))
    return findings


# --- Flower ----------------------------------------------------------------------------------


# --- manual requests' keys (docs/audit-and-roles.md, "Trust boundaries") ------------------------


def check_requests(settings: RequestSettings) -> list[Finding]:
    """The workers' keyring and this host's operator key, when set here: both load, and the
    key's principal has the matching public key in the keyring (else the workers refuse it)."""
    keyring = None
    if settings.operator_keys is None:
        found = [
            Finding(
                "keyring (KEYTURN_OPERATOR_KEYS)",
                Status.SKIP,
                "not set here (the workers': without it they refuse signed requests, and "
                f"unsigned ones act as {settings.api_principal!r})",
            )
        ]
    else:
        try:
            keyring = Keyring.load(settings.operator_keys)
        except KeyturnError as exc:
            found = [Finding("keyring (KEYTURN_OPERATOR_KEYS)", Status.FAIL, exc.message)]
        else:
            names = ", ".join(sorted(keyring.keys)) or "none"
            status = Status.OK if keyring.keys else Status.WARN
            found = [
                Finding(
                    "keyring (KEYTURN_OPERATOR_KEYS)",
                    status,
                    f"{len(keyring.keys)} operator key(s) in {settings.operator_keys}: {names}",
                )
            ]
    return found + _operator_key(settings, keyring)


def _operator_key(settings: RequestSettings, keyring: Keyring | None) -> list[Finding]:
    check = "operator key (KEYTURN_OPERATOR_KEY)"
    if settings.operator_key is None:
        detail = "not set: `keyturn rotate|rotate-all|rollback|resolve` cannot sign here"
        return [Finding(check, Status.SKIP, detail)]
    principal = Path(settings.operator_key).stem
    try:
        key = load_private_key(settings.operator_key)
    except KeyturnError as exc:
        return [Finding(check, Status.FAIL, exc.message)]
    if keyring is None:
        return [Finding(check, Status.OK, f"signs as {principal!r}")]
    known = keyring.key_of(principal)
    if known is None:
        detail = f"signs as {principal!r}, but the keyring has no {principal}.pub: refused"
        return [Finding(check, Status.FAIL, detail)]
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    if key.public_key().public_bytes(*raw) != known.public_bytes(*raw):
        detail = f"signs as {principal!r}, but {principal}.pub in the keyring is another key"
        return [Finding(check, Status.FAIL, f"{detail}: refused")]
    return [Finding(check, Status.OK, f"signs as {principal!r}; the keyring holds its key")]


def check_flower(url: str | None, settings: FlowerSettings, timeout: float = 5.0) -> list[Finding]:
    """A Flower at ``url`` must refuse requests without credentials; without a URL, this
    environment's Flower variables are checked."""
    if url:
        return [_probe_flower(url.rstrip("/"), timeout)]
    if settings.unauthenticated_api:
        return [
            Finding(
                "flower",
                Status.FAIL,
                "FLOWER_UNAUTHENTICATED_API is set: anyone who reaches Flower can start "
                "rotations; unset it",
            )
        ]
    if settings.basic_auth or settings.oauth:
        which = "FLOWER_BASIC_AUTH" if settings.basic_auth else "FLOWER_AUTH"
        return [Finding("flower", Status.OK, f"{which} is set in this environment")]
    return [
        Finding(
            "flower",
            Status.SKIP,
            "not checked: give --flower-url to probe your Flower (or run doctor with Flower's "
            "environment)",
        )
    ]


def _probe_flower(base: str, timeout: float) -> Finding:
    open_paths: list[str] = []
    for path in ("/api/workers", "/"):
        try:
            with urllib.request.urlopen(base + path, timeout=timeout) as answer:
                status = answer.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return Finding("flower", Status.FAIL, f"cannot reach Flower at {base}: {reason}")
        if status < 400:
            open_paths.append(path)
    if open_paths:
        return Finding(
            "flower",
            Status.FAIL,
            f"Flower at {base} answers {' and '.join(open_paths)} without credentials: start "
            "it with FLOWER_BASIC_AUTH=user:password (docs/operations.md)",
        )
    return Finding("flower", Status.OK, f"Flower at {base} refuses requests without credentials")


def worst(findings: Iterable[Finding]) -> Status:
    statuses = {f.status for f in findings}
    for status in (Status.FAIL, Status.WARN, Status.OK):
        if status in statuses:
            return status
    return Status.SKIP
