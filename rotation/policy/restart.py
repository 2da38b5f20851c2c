"""Restart strategies a policy can name (``restart: {strategy: ...}``), registered into
:data:`rotation.policy.RESTART_STRATEGIES`. What each does at run time: rotation/run/restart.py."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import Field, StrictInt, field_validator

from rotation.names import validate_name
from rotation.policy import RESTART_STRATEGIES, Duration, NoRestart, RestartStrategy

__all__ = ["AcknowledgeRestart", "CommandRestart", "WavesRestart", "WebhookRestart"]

#: A step must finish well inside the engine's lease (5 minutes by default).
MAX_STEP_TIMEOUT = timedelta(minutes=4)


class AcknowledgeRestart(RestartStrategy):
    """Publish the promotion; wait until every live consumer of the secret acknowledged it."""

    strategy: Literal["acknowledge"] = "acknowledge"
    timeout: Duration = timedelta(minutes=10)
    on_timeout: Literal["fail", "proceed"] = "fail"


class CommandRestart(RestartStrategy):
    """Run commands in order (e.g. ``kubectl rollout restart``, then ``kubectl rollout status``)."""

    strategy: Literal["command"] = "command"
    commands: Annotated[tuple[tuple[str, ...], ...], Field(min_length=1, max_length=10)]
    timeout: Duration = timedelta(minutes=2)
    #: Worker environment variables the commands may see (e.g. KUBECONFIG); nothing else is
    #: passed but PATH, HOME, locale and KEYTURN_SECRET/VERSION/RUN_ID, so a command that prints
    #: its environment cannot leak the worker's own credentials into the logs.
    pass_env: Annotated[tuple[str, ...], Field(max_length=50)] = ()

    @field_validator("pass_env")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", name):
                raise ValueError(f"pass_env: {name[:40]!r} is not an environment variable name")
        return value

    @field_validator("commands")
    @classmethod
    def _argv(cls, value: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, ...], ...]:
        for argv in value:
            if not argv or not argv[0]:
                raise ValueError("each command is a non-empty argv list, e.g. [kubectl, ...]")
            if any("\x00" in part for part in argv):
                raise ValueError("command arguments cannot contain NUL characters")
        return value

    @field_validator("timeout")
    @classmethod
    def _bounded(cls, value: timedelta) -> timedelta:
        if not timedelta(0) < value <= MAX_STEP_TIMEOUT:
            raise ValueError("timeout must be above 0 and at most 4m (the step runs in a worker)")
        return value


class WebhookRestart(RestartStrategy):
    """POST the promotion to a URL, signed with HMAC-SHA256 (header ``X-Keyturn-Signature``)."""

    strategy: Literal["webhook"] = "webhook"
    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$", max_length=2000)]
    #: Name of the secret (in the same backend) that holds the HMAC key.
    hmac_secret: str
    timeout: Duration = timedelta(seconds=10)

    @field_validator("hmac_secret")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_name(value)

    @field_validator("timeout")
    @classmethod
    def _bounded(cls, value: timedelta) -> timedelta:
        if not timedelta(0) < value <= timedelta(minutes=1):
            raise ValueError("timeout must be above 0 and at most 1m")
        return value


WaveStrategy = Annotated[
    AcknowledgeRestart | CommandRestart | WebhookRestart | NoRestart,
    Field(discriminator="strategy"),
]


class WavesRestart(RestartStrategy):
    """Strategies one after another, with at most ``concurrency`` runs of the policy restarting."""

    strategy: Literal["waves"] = "waves"
    waves: Annotated[tuple[WaveStrategy, ...], Field(min_length=1, max_length=10)]
    concurrency: StrictInt = Field(default=1, ge=1, le=1000)


RESTART_STRATEGIES.update(
    {
        "acknowledge": AcknowledgeRestart,
        "command": CommandRestart,
        "webhook": WebhookRestart,
        "waves": WavesRestart,
    }
)
