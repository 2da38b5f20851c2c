"""What a Vault token may do, asked without doing it: ``POST sys/capabilities-self``.

Vault answers, per path, the capabilities the token's policies grant (``root`` grants all,
``deny`` none); nothing is read or written. The paths are the ones the provider touches:
the secret's data and metadata (read; promote updates both), the pending sibling
``<prefix>.keyturn/pending/<name>`` (create/update; discarding deletes its metadata) and the
metadata folder (list).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rotation.providers.base import LIST, READ, WRITE_PENDING, AccessCheck

__all__ = ["check_access", "needed_paths"]

PENDING_DIR = ".keyturn/pending/"


def needed_paths(mount: str, prefix: str, names: Sequence[str]) -> dict[str, dict[str, set[str]]]:
    """permission -> {path: capabilities needed on it}."""
    read: dict[str, set[str]] = {}
    write: dict[str, set[str]] = {}
    for name in names:
        read[f"{mount}/data/{prefix}{name}"] = {"read"}
        read[f"{mount}/metadata/{prefix}{name}"] = {"read"}
        write[f"{mount}/data/{prefix}{PENDING_DIR}{name}"] = {"create", "update", "read"}
        write[f"{mount}/metadata/{prefix}{PENDING_DIR}{name}"] = {"delete"}
        write[f"{mount}/data/{prefix}{name}"] = {"update"}
        write[f"{mount}/metadata/{prefix}{name}"] = {"update"}
    folder = f"{mount}/metadata/{prefix}".rstrip("/") + "/" if prefix else f"{mount}/metadata/"
    return {READ: read, WRITE_PENDING: write, LIST: {folder: {"list"}}}


def _missing(granted: Iterable[str], needed: set[str]) -> set[str]:
    have = set(granted)
    if "deny" in have:
        return set(needed)
    if "root" in have:
        return set()
    return needed - have


def check_access(provider: Any, names: Sequence[str]) -> list[AccessCheck]:
    wanted = needed_paths(provider.mount, provider.prefix, names)
    paths = sorted({path for group in wanted.values() for path in group})
    answer: Mapping[str, Any] = provider._conn.call(
        lambda c: c.sys.get_capabilities(paths=paths), None
    )
    granted: Mapping[str, Any] = answer.get("data", answer) if isinstance(answer, Mapping) else {}
    checks = []
    for permission, needs in wanted.items():
        gaps = {
            path: _missing(granted.get(path, ()), caps)
            for path, caps in needs.items()
            if _missing(granted.get(path, ()), caps)
        }
        if gaps:
            path, caps = sorted(gaps.items())[0]
            more = f" (and {len(gaps) - 1} more paths)" if len(gaps) > 1 else ""
            has = ", ".join(sorted(granted.get(path, ()))) or "nothing"
            checks.append(
                AccessCheck(
                    permission,
                    False,
                    f"the token lacks {', '.join(sorted(caps))} on {path}{more} (it has: {has})",
                )
            )
        else:
            checks.append(
                AccessCheck(permission, True, f"sys/capabilities-self on {len(needs)} path(s)")
            )
    return checks
