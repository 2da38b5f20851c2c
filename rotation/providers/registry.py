"""Provider aliases, imported lazily (kombu's ``TRANSPORT_ALIASES``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rotation.errors import UnknownProvider
from rotation.providers.base import Provider
from rotation.registry import AliasRegistry

__all__ = ["PROVIDER_ALIASES", "create_provider", "register_provider", "resolve_provider"]

PROVIDER_ALIASES: dict[str, str] = {
    "memory": "rotation.providers.memory:MemoryProvider",
    "local": "rotation.providers.local:LocalProvider",
    "vault": "rotation.providers.vault.provider:VaultProvider",
    "aws": "rotation.providers.aws.provider:AWSSecretsManagerProvider",
    "azure": "rotation.providers.azure.provider:AzureKeyVaultProvider",
}

_REGISTRY = AliasRegistry(
    "secrets provider",
    PROVIDER_ALIASES,
    unknown=UnknownProvider,
    extras={"vault": "vault", "aws": "aws", "azure": "azure"},
)


def register_provider(alias: str, target: str) -> None:
    """Register ``alias`` for ``"package.module:Class"``; registering a name twice raises."""
    _REGISTRY.register(alias, target)


def resolve_provider(alias: str) -> type[Any]:
    """The provider class behind ``alias``, imported on first use."""
    cls: type[Any] = _REGISTRY.resolve(alias)
    return cls


def create_provider(alias: str, environ: Mapping[str, str]) -> Provider:
    """Build the provider ``alias`` from environment variables."""
    provider: Provider = resolve_provider(alias).from_env(environ)
    return provider
