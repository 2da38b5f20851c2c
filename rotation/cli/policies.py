"""``keyturn policies``: check rotation policy files."""

from __future__ import annotations

import click


@click.group("policies")
def policies_group() -> None:
    """Rotation policies (schedules/*.yaml)."""
