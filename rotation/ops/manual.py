"""Manual requests as the workers serve them: authenticate, authorize, audit, then act.

Every manual action (rotate, rotate_all, rollback, resolve) reaches the ledger only here, in a
worker. A signed request acts as the principal whose key signed it; an unsigned one (a bare
Flower or ``celery call``) as ``KEYTURN_API_PRINCIPAL``; a claimed actor is never believed. A
refused request is audited as ``request.refused`` (the claimed actor and the reason, never the
arguments); an allowed one as ``request.allowed`` (the verified principal) in the transaction
that uses its nonce, before the action's effects. Answers carry names, run ids, states and
notes, never a value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rotation.access.audit import AuditEvent
from rotation.access.audit import append as audit_append
from rotation.access.guard import authorize_audited
from rotation.access.requests import (
    Keyring,
    SignedRequest,
    claimed_actor,
    consume_nonce,
    verify,
)
from rotation.access.roles import Permission, acting_as
from rotation.config import EngineSettings, RequestSettings
from rotation.errors import ConfigurationError, KeyturnError, RequestRefused
from rotation.ops.operations import resolve_secret, rollback_secret
from rotation.run.runtime import Runtime
from rotation.run.steps import FAILED_RETRY_DELAY
from rotation.scheduler.triggers import Triggered, rotate_all, rotate_now

__all__ = ["ACTIONS", "Handled", "handle"]

#: Each manual action and the permission it needs.
ACTIONS: Mapping[str, Permission] = {
    "rotate": Permission.ROTATE,
    "rotate_all": Permission.ROTATE_ALL,
    "rollback": Permission.ROTATE,
    "resolve": Permission.ROTATE,
}


@dataclass
class Handled:
    """The answer for the sender (JSON: ids, states, notes) and the runs to send to the workers."""

    answer: dict[str, Any]
    enqueue: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Sender:
    principal: str
    request: SignedRequest | None


def _authenticate(
    runtime: Runtime,
    settings: RequestSettings,
    action: str,
    args: Mapping[str, Any],
    signed: object,
    claimed: str | None,
) -> _Sender:
    if signed is None:
        if claimed and claimed != settings.api_principal:
            raise RequestRefused(
                f"request refused: an unsigned request acts as {settings.api_principal!r} and "
                f"cannot name another actor ({claimed[:200]!r}); sign it (`keyturn` with "
                "KEYTURN_OPERATOR_KEY) or leave the actor out; nothing was done",
                claimed=claimed[:200],
                reason=f"unsigned request claims an actor other than {settings.api_principal!r}",
            )
        return _Sender(settings.api_principal, None)
    if settings.operator_keys is None:
        who = claimed_actor(signed)
        raise RequestRefused(
            f"request refused: the workers hold no operator keys (KEYTURN_OPERATOR_KEYS), so "
            f"no signed request can be verified (claimed actor {who!r}); nothing was done",
            claimed=who,
            reason="no operator keyring on the workers",
        )
    request = verify(
        signed,
        Keyring.load(settings.operator_keys),
        action=action,
        args=args,
        now=runtime.clock(),
        max_ttl=settings.ttl,
    )
    return _Sender(request.actor, request)


def _audit_refusal(runtime: Runtime, exc: RequestRefused, action: str, secret: str | None) -> None:
    """``request.refused`` with the claimed actor and the reason, never the arguments."""
    event = AuditEvent(
        action="request.refused",
        actor=exc.claimed,
        outcome="denied",
        secret=secret,
        detail=f"{action}: {exc.reason}",
        at=runtime.clock(),
    )
    with runtime.ledger.transaction() as session:
        audit_append(session, event)


def _error(exc: KeyturnError) -> dict[str, Any]:
    return {"ok": False, "error": type(exc).__name__, "message": exc.message}


def handle(
    runtime: Runtime,
    action: str,
    args: Mapping[str, Any],
    *,
    signed: object = None,
    claimed: str | None = None,
    settings: RequestSettings | None = None,
) -> Handled:
    """Serve one manual request; every outcome is an answer (a refusal is not retried)."""
    settings = settings or RequestSettings.from_env(runtime.environ)
    if action not in ACTIONS:
        return Handled(_error(ConfigurationError(f"Unknown manual action {action!r}.")))
    secret = args.get("secret") if isinstance(args.get("secret"), str) else None
    try:
        sender = _authenticate(runtime, settings, action, args, signed, claimed)
    except RequestRefused as exc:
        _audit_refusal(runtime, exc, action, secret)
        return Handled(_error(exc))
    except KeyturnError as exc:  # a broken keyring: the workers' configuration, not the sender
        return Handled(_error(exc))
    try:
        with acting_as(sender.principal):
            authorize_audited(ACTIONS[action], action, secret)
        how = "signed" if sender.request is not None else "unsigned"
        try:
            with runtime.ledger.transaction() as session:
                now = runtime.clock()
                if sender.request is not None:
                    consume_nonce(session, sender.request, now)
                audit_append(
                    session,
                    AuditEvent(
                        action="request.allowed",
                        actor=sender.principal,
                        secret=secret,
                        detail=f"{action} ({how})",
                        at=now,
                    ),
                )
        except RequestRefused as exc:
            _audit_refusal(runtime, exc, action, secret)
            raise
        trigger = "manual" if sender.request is not None else "api"
        handled = _act(runtime, action, args, sender.principal, trigger)
    except KeyturnError as exc:
        return Handled(_error(exc))
    handled.answer.update(ok=True, action=action, principal=sender.principal)
    return handled


def _triggered(t: Triggered) -> dict[str, Any]:
    return {"secret": t.secret, "run_id": t.run_id, "created": t.created, "state": t.state}


def _since(value: object) -> datetime | None:
    """``rotate_all``'s ``since``: an ISO time with its offset (the CLI's ``--since``)."""
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(str(value))
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise ConfigurationError(
            f"rotate_all: since must be an ISO time with an offset (2026-05-04T09:00:00+00:00), "
            f"not {str(value)[:64]!r}"
        )
    return at


def _act(
    runtime: Runtime, action: str, args: Mapping[str, Any], principal: str, trigger: str
) -> Handled:
    if action == "rotate":
        t = rotate_now(runtime, str(args["secret"]), actor=principal, trigger=trigger)
        return Handled({"runs": [_triggered(t)]}, [(t.run_id, t.state)] if t.created else [])
    if action == "rotate_all":
        since = _since(args.get("since"))
        started = rotate_all(
            runtime, str(args["pattern"]), actor=principal, trigger=trigger, since=since
        )
        return Handled(
            {"runs": [_triggered(t) for t in started]},
            [(t.run_id, t.state) for t in started if t.created],
        )
    seconds = args.get("retry_after_seconds")
    retry_after = timedelta(seconds=float(seconds)) if seconds else FAILED_RETRY_DELAY
    if action == "rollback":
        lease = EngineSettings.from_env(runtime.environ).lease
        rolled = rollback_secret(
            runtime, str(args["secret"]), principal, retry_after=retry_after, lease=lease
        )
        run = {
            "secret": rolled.secret,
            "run_id": rolled.run_id,
            "from_state": rolled.from_state,
            "state": rolled.state,
            "note": rolled.note,
        }
        return Handled({"runs": [run]}, [(rolled.run_id, rolled.state)] if rolled.enqueue else [])
    done = resolve_secret(
        runtime,
        str(args["secret"]),
        principal,
        action=str(args.get("how")),
        retry_after=retry_after,
    )
    run = {
        "secret": done.secret,
        "run_id": done.run_id,
        "from_state": done.from_state,
        "state": done.state,
        "note": done.note,
    }
    return Handled({"runs": [run]}, [(done.run_id, done.state)] if done.enqueue else [])
