"""PostgreSQL login credentials, by concern: ``rotator`` (the steps), ``target`` (the policy's
``target`` block) and ``grants`` (mirroring grants to the alternate user)."""

from __future__ import annotations

from rotation.rotators.postgres.rotator import Credential, PostgresRotator

__all__ = ["Credential", "PostgresRotator"]
