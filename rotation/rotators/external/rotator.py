"""The ``external`` rotator: each step is a call to an adapter the user runs.

AWS's rotation-Lambda contract without AWS: the adapter gets ``{"protocol": 1, "step",
"secret", "token", "timestamp", ...}`` as JSON for create, apply, test, retire and undo, with
the values that step needs, and answers JSON. Over HTTPS each request is a POST signed with
HMAC-SHA256 (``X-Keyturn-Signature: sha256=<hex>`` over the exact body, keyed by the policy's
``hmac_secret``); a command gets the request on stdin and answers on stdout. ``create``'s
answer carries the new value (``{"value": ...}``), which the engine stores as pending; it is
never logged. The adapter must be idempotent on the token: asked twice, it does the step once.

Failures: a non-2xx answer (or a non-zero exit) fails the step; 408, 425, 429 and 5xx (exit 75
for a command), timeouts and unreachable adapters are retried within the run's attempts, the
rest are not; the answer's ``"retryable"`` (a boolean) overrides that, and its ``"error"``
(text, cut to 200 characters, every value the call carried blanked) is quoted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from rotation.errors import RotationError, TargetRejected
from rotation.rotators.base import Capabilities, RotationContext, run_versions, target_of
from rotation.rotators.external import transport
from rotation.rotators.external.target import ExternalTarget
from rotation.values import SecretValue

__all__ = ["PROTOCOL", "ExternalRotator", "sign"]

log = logging.getLogger("keyturn.rotators.external")

PROTOCOL = 1
_ERROR_CHARS = 200
_MIN_KEY_CHARS = 16


def sign(key: str, body: bytes) -> str:
    """The ``X-Keyturn-Signature`` header value of ``body``."""
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def _strings(values: Iterable[object]) -> Iterable[str]:
    for value in values:
        if isinstance(value, str):
            yield value
        elif isinstance(value, Mapping):
            yield from _strings(value.values())


def _scrub(text: str, values: Iterable[object]) -> str:
    text = re.sub(r"[\x00-\x1f\x7f]", " ", text)
    for needle in sorted({s for s in _strings(values) if len(s) >= 4}, key=len, reverse=True):
        text = text.replace(needle, "[redacted]")
    return text[:_ERROR_CHARS]


class ExternalRotator:
    """Any system, through the user's adapter (HTTPS endpoint or command)."""

    kind = "external"
    Target = ExternalTarget
    #: What the adapter promises: it keeps both until retire (e.g. two API keys) and revokes
    #: the old one at retire. The reference adapter in tests/ does both.
    capabilities = Capabilities(dual_valid=True, revokes=True)

    def create(self, ctx: RotationContext, current: SecretValue) -> SecretValue:
        staged = ctx.staged()
        if staged is not None:
            return staged.value
        reply = self._call(ctx, "create", current=current)
        value = reply.get("value")
        if isinstance(value, str) and value:
            return value
        if isinstance(value, Mapping) and value and all(isinstance(k, str) for k in value):
            return dict(value)
        raise RotationError(
            f"The external adapter answered create for {ctx.secret!r} without a value "
            '(expected {"value": "..."} or {"value": {...}}).',
            retryable=False,
        )

    def apply(self, ctx: RotationContext) -> None:
        new, old = run_versions(ctx)
        self._call(ctx, "apply", value=new.value, current=old.value)

    def test(self, ctx: RotationContext) -> None:
        new, _ = run_versions(ctx)
        self._call(ctx, "test", value=new.value)

    def retire(self, ctx: RotationContext, old: SecretValue) -> None:
        self._call(ctx, "retire", value=ctx.current().value, old=old)

    def undo(self, ctx: RotationContext) -> None:
        current = ctx.current()
        if current.token == ctx.token:
            raise RotationError(
                f"Undo of {ctx.secret!r} while this run's value is current: roll back first.",
                retryable=False,
            )
        mine = ctx.staged()
        rolled_back = False
        if mine is None:
            previous = ctx.previous()
            if previous is not None and previous.token == ctx.token:
                mine, rolled_back = previous, True
        self._call(
            ctx,
            "undo",
            current=current.value,
            value=mine.value if mine is not None else None,
            rolled_back=rolled_back,
        )

    # --- the call --------------------------------------------------------------------------

    def _call(self, ctx: RotationContext, step: str, **fields: Any) -> dict[str, Any]:
        target = target_of(ctx, ExternalTarget)
        request = {
            "protocol": PROTOCOL,
            "step": step,
            "secret": ctx.secret,
            "token": ctx.token,
            "timestamp": int(time.time()),
            **fields,
        }
        body = json.dumps(request, sort_keys=True, separators=(",", ":")).encode()
        budget = target.timeout.total_seconds()
        started = time.monotonic()
        if target.url is not None:
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "keyturn",
                "X-Keyturn-Step": step,
                "X-Keyturn-Signature": sign(self._key(ctx, target), body),
            }
            reply = transport.post(target.url, body, headers, budget, target.ca_file)
        else:
            assert target.command is not None
            reply = transport.run_command(
                target.command, body, self._env(ctx, target, step, body), budget
            )
        log.info(
            "external adapter %s for %s: %s",
            step,
            ctx.secret,
            reply.status,
            extra={
                "action": "external.call",
                "secret": ctx.secret,
                "step": step,
                "status": reply.status,
                "seconds": round(time.monotonic() - started, 3),
            },
        )
        answer = self._parse(reply.body)
        if reply.ok:
            return answer
        retryable = answer.get("retryable")
        error = answer.get("error")
        detail = ""
        if isinstance(error, str) and error.strip():
            detail = f": {_scrub(error, [*fields.values(), answer.get('value')])}"
        raise TargetRejected(
            f"The external adapter refused {step} of {ctx.secret!r} ({reply.status}){detail}",
            retryable=retryable if isinstance(retryable, bool) else reply.retryable,
        )

    @staticmethod
    def _parse(body: bytes) -> dict[str, Any]:
        if not body.strip():
            return {}
        try:
            answer = json.loads(body)
        except ValueError:
            return {}  # never quoted: it may hold anything
        return answer if isinstance(answer, dict) else {}

    @staticmethod
    def _key(ctx: RotationContext, target: ExternalTarget) -> str:
        assert target.hmac_secret is not None
        key = ctx.secret_value(target.hmac_secret)
        if not isinstance(key, str) or len(key) < _MIN_KEY_CHARS:
            raise RotationError(
                f"The HMAC key secret {target.hmac_secret!r} must be a string of at least "
                f"{_MIN_KEY_CHARS} characters.",
                retryable=False,
            )
        return key

    def _env(
        self, ctx: RotationContext, target: ExternalTarget, step: str, body: bytes
    ) -> dict[str, str]:
        passed = (*transport.BASE_ENV, *target.pass_env)
        env = {name: os.environ[name] for name in passed if name in os.environ}
        env.update(KEYTURN_STEP=step, KEYTURN_SECRET=ctx.secret, KEYTURN_TOKEN=ctx.token)
        if target.hmac_secret is not None:
            env["KEYTURN_SIGNATURE"] = sign(self._key(ctx, target), body)
        return env
