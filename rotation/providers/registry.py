"""Provider aliases, imported lazily (kombu's ``TRANSPORT_ALIASES``)."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping
from typing import Any

from rotation.errors import ConfigurationError, UnknownProvider
from rotation.providers.base import Provider

__all__ = ["PROVIDER_ALIASES", "create_provider", "register_provider", "resolve_provider"]

PROVIDER_ALIASES: dict[str, str] = {
    "memory": "rotation.providers.memory:MemoryProvider",
    "local": "rotation.providers.local:LocalProvider",
    "vault": "rotation.providers.vault:VaultProvider",
    "aws": "rotation.providers.aws:AWSSecretsManagerProvider",
    "azure": "rotation.providers.azure:AzureKeyVaultProvider",
}

#: The pip extra that brings each alias's client library.
_EXTRAS = {"vault": "vault", "aws": "aws", "azure": "azure"}


def register_provider(alias: str, target: str) -> None:
    """Register ``alias`` for ``"package.module:Class"``; registering a name twice raises."""
    if alias in PROVIDER_ALIASES:
        raise ConfigurationError(
            f"Provider {alias!r} is already registered ({PROVIDER_ALIASES[alias]})."
        )
    if ":" not in target:
        raise ConfigurationError(f"Provider target must look like 'module:Class', not {target!r}.")
    PROVIDER_ALIASES[alias] = target


def resolve_provider(alias: str) -> type[Any]:
    """The provider class behind ``alias``, imported on first use."""
    target = PROVIDER_ALIASES.get(alias)
    if target is None:
        close = difflib.get_close_matches(alias, PROVIDER_ALIASES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownProvider(
            f"No such secrets provider: {alias!r}.{hint} "
            f"Known providers: {', '.join(sorted(PROVIDER_ALIASES))}."
        )
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        extra = _EXTRAS.get(alias)
        if extra and exc.name and not exc.name.startswith("rotation"):
            raise ConfigurationError(
                f"The {alias!r} provider needs {exc.name!r}: pip install 'keyturn[{extra}]'."
            ) from exc
        raise
    cls: type[Any] = getattr(module, attribute)
    return cls


def create_provider(alias: str, environ: Mapping[str, str]) -> Provider:
    """Build the provider ``alias`` from environment variables."""
    provider: Provider = resolve_provider(alias).from_env(environ)
    return provider
