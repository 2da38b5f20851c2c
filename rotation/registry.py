"""Plug-in tables: a name -> what implements it, imported lazily (kombu's ``TRANSPORT_ALIASES``).

One table per plug-in point (providers, rotator kinds, restart strategies). A target is an
import path ``"package.module:attr"`` (imported on first use, so ``import rotation`` stays
light) or the object itself. Typos get "did you mean"; registering a name twice raises.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from rotation.errors import ConfigurationError

__all__ = ["AliasRegistry", "import_object"]


def import_object(path: str, *, what: str = "object") -> Any:
    """The object named by ``"package.module:attr"`` (``attr`` may be dotted)."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(f"A {what} must look like 'package.module:attr', not {path!r}.")
    found: Any = importlib.import_module(module_name)
    try:
        for part in attribute.split("."):
            found = getattr(found, part)
    except AttributeError:
        raise ConfigurationError(
            f"Cannot load {what} {path!r}: {module_name} has no {attribute!r}."
        ) from None
    return found


class AliasRegistry:
    """``name -> "package.module:attr"`` (or the object itself), resolved on first use."""

    def __init__(
        self,
        what: str,
        aliases: dict[str, Any],
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

    def __contains__(self, name: object) -> bool:
        return name in self.aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.aliases)

    def register(self, alias: str, target: Any) -> None:
        """Add ``alias``; a string target must be ``"module:attr"``; a second time raises."""
        if alias in self.aliases:
            raise ConfigurationError(
                f"{self.what.capitalize()} {alias!r} is already registered ({self.aliases[alias]})."
            )
        if isinstance(target, str) and ":" not in target:
            raise ConfigurationError(
                f"{self.what.capitalize()} target must look like 'module:Class', not {target!r}."
            )
        self.aliases[alias] = target

    def unknown_message(self, alias: str) -> str:
        """``No such X: 'y'. Did you mean 'z'? Known: ...``"""
        close = difflib.get_close_matches(alias, list(self.aliases), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"No such {self.what}: {alias!r}.{hint} Known: {', '.join(sorted(self.aliases))}."

    def resolve(self, alias: str) -> Any:
        """What ``alias`` names, imported now if it is a path."""
        if alias not in self.aliases:
            raise self.unknown(self.unknown_message(alias))
        target = self.aliases[alias]
        if not isinstance(target, str):
            return target
        try:
            return import_object(target, what=self.what)
        except ModuleNotFoundError as exc:
            extra = self.extras.get(alias)
            if extra and exc.name and not exc.name.startswith("rotation"):
                raise ConfigurationError(
                    f"The {alias!r} {self.what} needs {exc.name!r}: pip install 'keyturn[{extra}]'."
                ) from exc
            raise
