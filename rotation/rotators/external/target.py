"""The ``external`` kind's ``target`` block: where the adapter is and how to call it."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from rotation.durations import Duration
from rotation.schema import Spec, check_secret_name

__all__ = ["MAX_TIMEOUT", "ExternalTarget"]

#: A step must finish well inside the engine's lease (5 minutes by default).
MAX_TIMEOUT = timedelta(minutes=4)


class ExternalTarget(Spec):
    """``external``: an HTTPS endpoint (or a command) that does each step for the kind."""

    #: The adapter's endpoint; every step is one signed POST to it. HTTPS only: values travel.
    url: Annotated[str, Field(pattern=r"^https://[^\s]+$", max_length=2000)] | None = None
    #: Or a command (argv list): the request on its stdin, the reply on its stdout.
    command: Annotated[tuple[str, ...], Field(min_length=1, max_length=50)] | None = None
    #: Name of the secret (same backend) holding the HMAC-SHA256 key that signs each request.
    hmac_secret: str | None = None
    #: A PEM file of the CA(s) to trust for ``url`` instead of the system's.
    ca_file: str | None = None
    #: The whole budget of one call (connect, send, answer); then the step fails, retryably.
    timeout: Duration = timedelta(seconds=10)
    #: Worker environment variables the command may see (nothing else but PATH, HOME, locale).
    pass_env: Annotated[tuple[str, ...], Field(max_length=50)] = ()

    @field_validator("hmac_secret")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        return None if value is None else check_secret_name(value)

    @field_validator("command")
    @classmethod
    def _argv(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and (not value[0] or any("\x00" in part for part in value)):
            raise ValueError("a non-empty argv list without NUL characters, e.g. [/usr/bin/x]")
        return value

    @field_validator("timeout")
    @classmethod
    def _bounded(cls, value: timedelta) -> timedelta:
        if not timedelta(0) < value <= MAX_TIMEOUT:
            raise ValueError("timeout must be above 0 and at most 4m (the step runs in a worker)")
        return value

    @field_validator("pass_env")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", name):
                raise ValueError(f"{name[:40]!r} is not an environment variable name")
        return value

    @model_validator(mode="after")
    def _one_way(self) -> ExternalTarget:
        if (self.url is None) == (self.command is None):
            raise ValueError("give exactly one of 'url' (an HTTPS adapter) or 'command'")
        if self.url is not None and self.hmac_secret is None:
            raise ValueError("'hmac_secret' is required with 'url' (requests are signed)")
        if self.command is not None and (self.ca_file is not None):
            raise ValueError("'ca_file' applies to 'url' only")
        if self.url is not None and self.pass_env:
            raise ValueError("'pass_env' applies to 'command' only")
        return self
