"""The provider registry: lazy aliases, typo hints, no double registration."""

from __future__ import annotations

import pytest

from rotation import SecretsManager
from rotation.errors import ConfigurationError, UnknownProvider
from rotation.providers.memory import MemoryProvider
from rotation.providers.registry import register_provider, resolve_provider


def test_resolve_and_typo_hint() -> None:
    assert resolve_provider("memory") is MemoryProvider
    with pytest.raises(UnknownProvider, match="Did you mean 'vault'"):
        resolve_provider("vualt")


def test_double_registration_raises() -> None:
    with pytest.raises(ConfigurationError, match="already registered"):
        register_provider("memory", "x.y:Z")


def test_manager_from_env() -> None:
    manager = SecretsManager.from_env({"SECRETS_PROVIDER": "memory", "SECRETS_CACHE_TTL": "0"})
    assert manager.provider.name == "memory" and manager.cache_ttl == 0
    with pytest.raises(ConfigurationError, match="SECRETS_CACHE_TTL"):
        SecretsManager.from_env({"SECRETS_PROVIDER": "memory", "SECRETS_CACHE_TTL": "five"})
    with pytest.raises(UnknownProvider):
        SecretsManager.from_env({"SECRETS_PROVIDER": "hashicorp"})
