"""Secrets backends behind one Protocol; see :mod:`rotation.providers.registry` for the aliases."""

from __future__ import annotations

from rotation.providers.base import Capability, Provider
from rotation.providers.registry import (
    PROVIDER_ALIASES,
    create_provider,
    register_provider,
    resolve_provider,
)

__all__ = [
    "PROVIDER_ALIASES",
    "Capability",
    "Provider",
    "create_provider",
    "register_provider",
    "resolve_provider",
]
