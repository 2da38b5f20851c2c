"""The random rotator (with and without an issuer hook) and the rotator registry."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from rotation.errors import ConfigurationError, RotationError, UnsupportedOperation
from rotation.generator import GeneratorPolicy
from rotation.providers.memory import MemoryProvider
from rotation.rotators.base import RotationContext
from rotation.rotators.random import RandomRotator
from rotation.rotators.registry import get_rotator, register_rotator, resolve_rotator
from rotation.values import SecretValue, Stage

SECRET = "api/key"


class RecordingIssuer:
    """An issuer hook: records every call; ``fail`` makes the next call raise."""

    calls: ClassVar[list[tuple[Any, ...]]] = []
    fail: ClassVar[Exception | None] = None

    def apply(self, secret: str, value: SecretValue) -> None:
        self._record("apply", secret, value)

    def test(self, secret: str, value: SecretValue) -> None:
        self._record("test", secret, value)

    def retire(self, secret: str, old_value: SecretValue) -> None:
        self._record("retire", secret, old_value)

    def _record(self, *call: Any) -> None:
        if RecordingIssuer.fail is not None:
            raise RecordingIssuer.fail
        RecordingIssuer.calls.append(call)


#: A module-level instance, for ``module:attr`` paths that name an object, not a class.
ISSUER = RecordingIssuer()


@pytest.fixture(autouse=True)
def _reset_issuer() -> None:
    RecordingIssuer.calls = []
    RecordingIssuer.fail = None


def context(provider: MemoryProvider, token: str = "t1", **target: Any) -> RotationContext:
    return RotationContext(
        secret=SECRET,
        provider=provider,
        token=token,
        generator=GeneratorPolicy(length=20, prefix="kt_"),
        target=target,
    )


def rotate(rotator: RandomRotator, ctx: RotationContext) -> tuple[SecretValue, SecretValue]:
    provider = ctx.provider
    old = provider.read(SECRET).value
    provider.stage_pending(SECRET, rotator.create(ctx, old), token=ctx.token)
    rotator.apply(ctx)
    rotator.test(ctx)
    provider.promote(SECRET, token=ctx.token)
    rotator.retire(ctx, provider.read(SECRET, stage=Stage.PREVIOUS).value)
    return old, provider.read(SECRET).value


def test_string_value_without_issuer() -> None:
    provider = MemoryProvider()
    provider.write(SECRET, "kt_old")
    old, new = rotate(RandomRotator(), context(provider))
    assert isinstance(new, str) and new.startswith("kt_") and len(new) == 23 and new != old


@pytest.mark.parametrize("field", ["password", "api_key", "token"])
def test_json_value_replaces_only_the_secret_field(field: str) -> None:
    provider = MemoryProvider()
    provider.write(SECRET, {"client_id": "abc", field: "old"})
    old, new = rotate(RandomRotator(), context(provider))
    assert isinstance(new, dict)
    assert new["client_id"] == "abc" and new[field] != "old" and set(new) == set(old)  # type: ignore[arg-type]


def test_json_value_without_a_known_field_is_refused_not_turned_into_a_string() -> None:
    provider = MemoryProvider()
    provider.write(SECRET, {"other": "x"})
    with pytest.raises(UnsupportedOperation, match="password, api_key, token"):
        RandomRotator().create(context(provider), provider.read(SECRET).value)


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        {"password": "p", "user": "u"},
        {"api_key": "k", "client_id": "c"},
        {"token": "t", "scope": "s"},
        {"password": "p", "api_key": "k"},  # the first field present wins
        {"cert": "x"},
    ],
)
def test_the_library_and_the_random_kind_rotate_json_by_one_rule(value: SecretValue) -> None:
    """manager.rotate() and the engine's random kind change the same field, or both refuse."""
    from rotation import SecretsManager

    outcomes = []
    for rotate_with in ("manager", "random"):
        provider = MemoryProvider()
        provider.write(SECRET, value)
        try:
            if rotate_with == "manager":
                new = SecretsManager(provider, cache_ttl=0).rotate(SECRET)
            else:
                new = RandomRotator().create(context(provider), value)
        except UnsupportedOperation:
            outcomes.append("refused")
            continue
        if isinstance(new, str):
            outcomes.append("string")
        else:
            assert isinstance(value, dict)
            changed = sorted(k for k in value if new[k] != value[k])
            assert set(new) == set(value)
            outcomes.append(",".join(changed))
    assert outcomes[0] == outcomes[1], outcomes


def test_create_is_idempotent_per_token() -> None:
    provider = MemoryProvider()
    provider.write(SECRET, "old-value")
    rotator, ctx = RandomRotator(), context(provider)
    first = rotator.create(ctx, "old-value")
    provider.stage_pending(SECRET, first, token="t1")
    assert rotator.create(ctx, "old-value") == first
    assert rotator.create(context(provider, token="t2"), "old-value") != first


@pytest.mark.parametrize("path", [f"{__name__}:RecordingIssuer", f"{__name__}:ISSUER"])
def test_issuer_hook_gets_each_step(path: str) -> None:
    provider = MemoryProvider()
    provider.write(SECRET, {"api_key": "old"})
    rotator = RandomRotator()
    ctx = context(provider, issuer=path)
    old, new = rotate(rotator, ctx)
    rotator.undo(ctx)  # RecordingIssuer has no undo: skipped
    assert RecordingIssuer.calls == [
        ("apply", SECRET, new),
        ("test", SECRET, new),
        ("retire", SECRET, old),
    ]


def test_issuer_errors_never_carry_the_value() -> None:
    provider = MemoryProvider()
    provider.write(SECRET, "old-value")
    rotator, ctx = RandomRotator(), context(provider, issuer=f"{__name__}:ISSUER")
    provider.stage_pending(SECRET, rotator.create(ctx, "old-value"), token="t1")
    pending = provider.read(SECRET, stage=Stage.PENDING).value
    RecordingIssuer.fail = ValueError(f"issuer refused {pending}")
    with pytest.raises(RotationError, match="failed to apply") as info:
        rotator.apply(ctx)
    assert str(pending) not in str(info.value) and info.value.__cause__ is None
    RecordingIssuer.fail = RotationError("issuer says no")
    with pytest.raises(RotationError, match=r"^issuer says no$"):
        rotator.test(ctx)


@pytest.mark.parametrize("path", ["no_colon", "tests.unit.test_random_rotator:Missing", "nope:x"])
def test_bad_issuer_paths(path: str) -> None:
    provider = MemoryProvider()
    provider.write(SECRET, "old-value")
    rotator, ctx = RandomRotator(), context(provider, issuer=path)
    provider.stage_pending(SECRET, rotator.create(ctx, "old-value"), token="t1")
    with pytest.raises(ConfigurationError, match="issuer"):
        rotator.apply(ctx)


def test_steps_need_this_runs_version() -> None:
    provider = MemoryProvider()
    provider.write(SECRET, "old-value")
    with pytest.raises(RotationError, match="staged under this run's token"):
        RandomRotator().apply(context(provider, issuer=f"{__name__}:ISSUER"))


def test_registry() -> None:
    assert get_rotator("random") is get_rotator("random")
    assert get_rotator("random").kind == "random"
    assert resolve_rotator("postgres").__name__ == "PostgresRotator"
    with pytest.raises(ConfigurationError, match="Did you mean 'postgres'"):
        get_rotator("postgers")
    with pytest.raises(ConfigurationError, match="already registered"):
        register_rotator("random", "x.y:Z")
    with pytest.raises(ConfigurationError, match="module:Class"):
        register_rotator("fresh-kind", "no-colon")
