"""Registries of aliases imported lazily (kombu's ``TRANSPORT_ALIASES``): providers, rotators."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping
from typing import Any

from rotation.errors import ConfigurationError

__all__ = ["AliasRegistry"]


class AliasRegistry:
    """``alias -> "package.module:Class"``; typos get "did you mean", double registration raises."""

    def __init__(
        self,
        what: str,
        aliases: dict[str, str],
        *,
        unknown: type[ConfigurationError] = ConfigurationError,
        extras: Mapping[str, str] | None = None,
    ) -> None:
        self.what = what
        #: The live table (modules expose it, e.g. ``PROVIDER_ALIASES``).
        self.aliases = aliases
        self.unknown = unknown
        #: The pip extra that brings an alias's client library, named when its import fails.
        self.extras = dict(extras or {})

    def register(self, alias: str, target: str) -> None:
        if alias in self.aliases:
            raise ConfigurationError(
                f"{self.what.capitalize()} {alias!r} is already registered ({self.aliases[alias]})."
            )
        if ":" not in target:
            raise ConfigurationError(
                f"{self.what.capitalize()} target must look like 'module:Class', not {target!r}."
            )
        self.aliases[alias] = target

    def resolve(self, alias: str) -> type[Any]:
        target = self.aliases.get(alias)
        if target is None:
            close = difflib.get_close_matches(alias, self.aliases, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise self.unknown(
                f"No such {self.what}: {alias!r}.{hint} Known: {', '.join(sorted(self.aliases))}."
            )
        module_name, _, attribute = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            extra = self.extras.get(alias)
            if extra and exc.name and not exc.name.startswith("rotation"):
                raise ConfigurationError(
                    f"The {alias!r} {self.what} needs {exc.name!r}: pip install 'keyturn[{extra}]'."
                ) from exc
            raise
        cls: type[Any] = getattr(module, attribute)
        return cls
