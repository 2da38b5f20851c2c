"""Drive one rotation through the engine's own step bodies (``rotation.run.steps``) and its
rollback (``rollback_where_safe``), one step at a time, so a test can look at the target between
any two steps. The engine's leasing and commits are not involved here (the SIGKILL matrix in
tests/faults/ runs the same kinds through real Celery workers)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rotation.generator import GeneratorPolicy
from rotation.policy import Policy
from rotation.providers.memory import MemoryProvider
from rotation.rotators.base import Capabilities, RotationContext
from rotation.rotators.registry import capabilities_of, get_rotator
from rotation.run.states import NEXT_STATE, RunState
from rotation.run.step import StepInput, StepResult
from rotation.run.steps import STEPS, rollback_where_safe
from rotation.values import SecretValue, Stage

#: Symbols included: values with quotes and backslashes must survive every target's quoting.
GENERATOR = {"length": 24, "classes": {"lower": 2, "upper": 2, "digits": 2, "symbols": 4}}


@dataclass
class Subject:
    """One kind, set up against its real server with a secret holding a working credential."""

    id: str
    kind: str
    target: dict[str, Any]
    provider: MemoryProvider
    #: Whether the target accepts a value (logs in with it, or the issuer knows it).
    works: Callable[[SecretValue], bool]
    secret: str = "cred/app"
    #: After a rollback the rolled-back credential may keep working (alternating users: the
    #: next rotation resets it; docs/rotators.md).
    keeps_rolled_back: bool = False
    #: A new credential works once create made it (a certificate is valid once issued): the
    #: test step is shown a forged value instead of an unapplied one.
    issued_at_create: bool = False
    #: A value undo discarded before promotion may keep working (an internal CA's certificate
    #: is never revoked: its key only ever was in the discarded pending value).
    keeps_discarded: bool = False
    generator: dict[str, Any] = field(default_factory=lambda: dict(GENERATOR))

    @property
    def capabilities(self) -> Capabilities:
        return capabilities_of(self.kind, self.target)

    def current(self) -> SecretValue:
        return self.provider.read(self.secret).value

    def policy(self) -> Policy:
        return Policy.model_validate(
            {
                "name": f"contract-{self.id}",
                "secret": self.secret,
                "kind": self.kind,
                "schedule": {"every": "30d"},
                "generator": self.generator,
                "target": self.target,
                "consumer_cache_ttl": "0s",  # no consumers here (the defaults rule)
            }
        )


class _Services:
    def __init__(self, provider: MemoryProvider) -> None:
        self.provider = provider

    def bus(self) -> Any:
        raise AssertionError("restart 'none' needs no bus")

    def claim_restart_slot(self, concurrency: int) -> bool:
        raise AssertionError("restart 'none' claims no slot")

    def read_secret(self, name: str) -> SecretValue:
        return self.provider.read(name).value


class Rotation:
    """One run of ``subject``'s secret, advanced by hand."""

    def __init__(self, subject: Subject, token: str | None = None) -> None:
        self.subject = subject
        self.token = token or uuid.uuid4().hex
        self.state = RunState.PENDING
        self.policy = subject.policy()
        self.from_version: str | None = None
        self.to_version: str | None = None
        self.initial = subject.current()

    def context(self) -> RotationContext:
        provider = self.subject.provider
        return RotationContext(
            secret=self.subject.secret,
            provider=provider,
            token=self.token,
            generator=GeneratorPolicy.model_validate(self.subject.generator),
            target=self.policy.target_settings(),
            read_secret=lambda name: provider.read(name).value,
        )

    def step_input(self) -> StepInput:
        now = datetime.now(UTC)
        return StepInput(
            run_id=1,
            secret=self.subject.secret,
            token=self.token,
            policy=self.policy,
            provider=self.subject.provider,
            rotator=get_rotator(self.subject.kind),
            context=self.context(),
            from_version=self.from_version,
            to_version=self.to_version,
            state_entered_at=now,
            now=now,
            services=_Services(self.subject.provider),
        )

    def step(self, *, again: bool = False) -> StepResult:
        """Run the step that leaves the current state (``again``: stay, as after a crash)."""
        result = STEPS[self.state][1](self.step_input())
        assert result.wait_until is None, result
        if result.from_version is not None:
            self.from_version = result.from_version
        if result.to_version is not None:
            self.to_version = result.to_version
        if not again:
            self.state = NEXT_STATE[self.state]
        return result

    def until(self, state: RunState) -> Rotation:
        while self.state is not state:
            self.step()
        return self

    def finish(self) -> Rotation:
        return self.until(RunState.SUCCEEDED)

    def rollback(self) -> str:
        return rollback_where_safe(self.step_input(), self.state)

    def new_value(self) -> SecretValue:
        """This run's value (pending, or current once promoted)."""
        provider, secret = self.subject.provider, self.subject.secret
        for stage in (Stage.PENDING, Stage.CURRENT, Stage.PREVIOUS):
            try:
                version = provider.read(secret, stage=stage)
            except Exception:
                continue
            if version.token == self.token:
                return version.value
        raise AssertionError("no version of this run")
