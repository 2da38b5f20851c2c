"""What the in-process backends may do: the local store's files, the memory store's limits."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from rotation.errors import KeyturnError
from rotation.providers.base import LIST, READ, WRITE_PENDING, AccessCheck

__all__ = ["check_directory", "check_memory"]


def check_directory(
    directory: Path, names: Sequence[str], read: object, listing: object
) -> list[AccessCheck]:
    """The local store: its secrets decrypt (read), it lists, and its directory is writable."""
    checks: list[AccessCheck] = []
    try:
        for name in names:
            read(name)  # type: ignore[operator]  # the value is not kept
        checks.append(AccessCheck(READ, True, f"{len(names)} secret(s) decrypt with the key"))
    except KeyturnError as exc:
        checks.append(AccessCheck(READ, False, exc.message))
    writable = os.access(directory, os.W_OK | os.X_OK)
    files = directory / "secrets"  # one sealed file per secret (rotation/providers/local.py)
    writable = writable and (not files.exists() or os.access(files, os.W_OK | os.X_OK))
    checks.append(
        AccessCheck(
            WRITE_PENDING,
            writable,
            f"{directory} is writable" if writable else f"{directory} is not writable by this user",
        )
    )
    try:
        listing()  # type: ignore[operator]
        checks.append(AccessCheck(LIST, True, "the store lists"))
    except KeyturnError as exc:
        checks.append(AccessCheck(LIST, False, exc.message))
    return checks


def check_memory(names: Sequence[str]) -> list[AccessCheck]:
    note = "in-process: every process has its own, so workers and this command share nothing"
    return [AccessCheck(p, None, note) for p in (READ, WRITE_PENDING, LIST)]
