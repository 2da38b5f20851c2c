"""The ``keyturn`` command line."""

from __future__ import annotations

from rotation.cli.app import main

__all__ = ["main"]
