"""Telling people when a rotation ends badly (or, if asked, well).

Every final state writes a log line with a stable ``action`` (``notify.failed``,
``notify.needs_attention``, ``notify.succeeded``). When ``KEYTURN_NOTIFY_WEBHOOK`` is set, the
states in ``KEYTURN_NOTIFY_ON`` (default ``failed,needs_attention``) are also POSTed there as a
Slack-compatible JSON body (``{"text": ...}``). Never a value: names, ids, states and the error.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Notice", "Notifier"]

log = logging.getLogger("keyturn.notify")

_ICONS = {"failed": ":x:", "needs_attention": ":rotating_light:", "succeeded": ":white_check_mark:"}


@dataclass(frozen=True)
class Notice:
    """A run that reached a final state."""

    run_id: int
    secret: str
    policy: str
    state: str
    message: str | None = None

    def text(self) -> str:
        icon = _ICONS.get(self.state, ":information_source:")
        line = (
            f"{icon} Keyturn: rotation of `{self.secret}` {self.state.replace('_', ' ')} "
            f"(run {self.run_id}, policy {self.policy})"
        )
        return f"{line}: {self.message}" if self.message else line


class Notifier:
    """Log every notice; POST the configured ones to the webhook (bounded, never raising)."""

    def __init__(self, environ: Mapping[str, str], timeout: float = 5.0) -> None:
        self.url = (environ.get("KEYTURN_NOTIFY_WEBHOOK") or "").strip() or None
        wanted = environ.get("KEYTURN_NOTIFY_ON") or "failed,needs_attention"
        self.states = {s.strip() for s in wanted.split(",") if s.strip()}
        self.timeout = timeout

    def __call__(self, notice: Notice) -> bool:
        """Returns whether the webhook accepted it (False when not sent)."""
        level = logging.INFO if notice.state == "succeeded" else logging.WARNING
        log.log(
            level,
            notice.text(),
            extra={
                "action": f"notify.{notice.state}",
                "run_id": notice.run_id,
                "secret": notice.secret,
            },
        )
        if self.url is None or notice.state not in self.states:
            return False
        body = json.dumps({"text": notice.text()}).encode()
        for _ in range(2):
            request = urllib.request.Request(
                self.url, data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    if 200 <= response.status < 300:
                        return True
            except (urllib.error.URLError, OSError):
                continue
        log.warning(
            "notification webhook did not accept the notice",
            extra={"action": "notify.webhook_failed", "run_id": notice.run_id},
        )
        return False
