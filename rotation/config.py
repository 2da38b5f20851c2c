"""Settings read from the environment, with clear errors for bad values."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from rotation.errors import ConfigurationError

__all__ = ["DEFAULT_CACHE_TTL", "Settings"]

DEFAULT_CACHE_TTL = 300.0


@dataclass(frozen=True)
class Settings:
    """``SECRETS_PROVIDER`` (default ``local``) and ``SECRETS_CACHE_TTL`` (seconds, 0 disables)."""

    provider: str = "local"
    cache_ttl: float = DEFAULT_CACHE_TTL

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        provider = (env.get("SECRETS_PROVIDER") or "local").strip().lower()
        raw_ttl = (env.get("SECRETS_CACHE_TTL") or "").strip()
        try:
            ttl = float(raw_ttl) if raw_ttl else DEFAULT_CACHE_TTL
        except ValueError:
            raise ConfigurationError(
                f"SECRETS_CACHE_TTL must be a number of seconds (0 disables the cache), "
                f"not {raw_ttl!r}."
            ) from None
        if ttl < 0 or ttl != ttl:
            raise ConfigurationError(f"SECRETS_CACHE_TTL must be >= 0, not {raw_ttl!r}.")
        return cls(provider=provider, cache_ttl=ttl)
