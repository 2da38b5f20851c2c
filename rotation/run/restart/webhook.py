"""``webhook``: POST the promotion to a URL, signed with HMAC-SHA256 (``X-Keyturn-Signature``).

A rollback POSTs ``{"event": "secret.rolled_back", "version": <current again>,
"rollback_of": <abandoned>, ...}`` to the same URL."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request

from rotation.errors import RotationError
from rotation.policy.restart import RestartStrategy, WebhookRestart
from rotation.run.restart import Progress, WaveOutcome
from rotation.run.step import StepInput

__all__ = ["call_webhook"]


def call_webhook(step: StepInput, spec: RestartStrategy, progress: Progress) -> WaveOutcome:
    """One signed POST; any answer but 2xx, or none, is retried (the step's attempts)."""
    assert isinstance(spec, WebhookRestart)
    key = step.services.read_secret(spec.hmac_secret)
    if not isinstance(key, str):
        raise RotationError(
            f"the HMAC key secret {spec.hmac_secret} must be a string", retryable=False
        )
    move = step.announced()
    payload: dict[str, object] = {
        "event": f"secret.{move.event}",
        "secret": step.secret,
        "version": move.version,
        "run_id": step.run_id,
        "policy": step.policy.name,
    }
    if move.rollback_of is not None:
        payload["rollback_of"] = move.rollback_of
    body = json.dumps(payload, sort_keys=True).encode()
    signature = hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        spec.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-Keyturn-Signature": f"sha256={signature}",
            "User-Agent": "keyturn",
        },
    )
    step.guard.check()
    timeout = step.context.time_left(spec.timeout.total_seconds())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        raise RotationError(
            f"restart webhook unreachable ({type(exc).__name__})", retryable=True
        ) from None
    if not 200 <= status < 300:
        raise RotationError(f"restart webhook answered HTTP {status}", retryable=True)
    return WaveOutcome(note=f"webhook answered HTTP {status}")
