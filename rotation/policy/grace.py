"""The defaults rule: an old credential is never revoked while consumers may still hold it.

A kind whose ``retire`` revokes the old credential (``capabilities.revokes``: ``postgres``,
``mysql``, ``redis``, ``external``, a ``random`` issuer with a ``retire`` hook) needs either a
restart strategy that *confirms* the consumers moved (``acknowledge`` with ``on_timeout: fail``,
``command``, ``webhook``, or ``waves`` of those), or a ``retire_after`` at least the consumers'
cache TTL (``consumer_cache_ttl``, default 300 s: ``SECRETS_CACHE_TTL``'s default), so a
consumer that never heard of the rotation has re-read the secret before the old one stops
working. ``Policy`` applies it (field ``retire_after``), so ``keyturn policies check``, the
dispatcher's sync (beat) and the workers all refuse a policy that breaks it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from rotation.durations import format_duration
from rotation.errors import ConfigurationError
from rotation.policy.restart import RestartStrategy
from rotation.rotators.registry import capabilities_of

__all__ = ["DEFAULT_CONSUMER_CACHE_TTL", "revoke_grace_problem"]

#: ``SECRETS_CACHE_TTL``'s default: how long a consumer may serve a value from its cache.
DEFAULT_CONSUMER_CACHE_TTL = timedelta(seconds=300)


def revoke_grace_problem(
    kind: str,
    target: Mapping[str, Any] | BaseModel | None,
    restart: RestartStrategy,
    retire_after: timedelta,
    consumer_cache_ttl: timedelta,
) -> str | None:
    """Why this policy could revoke a credential a consumer still holds, or None."""
    if restart.confirms or retire_after >= consumer_cache_ttl:
        return None
    try:
        revokes = capabilities_of(kind, target).revokes
    except (ConfigurationError, ImportError):
        # cannot tell here (an issuer hook this process cannot import): the workers, which
        # import it to rotate, validate the policy too and apply the rule there
        return None
    if not revokes:
        return None
    ttl = format_duration(consumer_cache_ttl)
    strategy = repr(restart.strategy)
    if getattr(restart, "on_timeout", None) == "proceed":
        strategy += " with on_timeout: proceed"
    return (
        f"{format_duration(retire_after)} is shorter than consumer_cache_ttl ({ttl}) and "
        f"restart {strategy} does not confirm that consumers moved: kind {kind!r} "
        "revokes the old credential at retire, so a consumer still serving it from its cache "
        f"would fail. Set retire_after to at least {ttl}, or use a confirming restart strategy "
        "(acknowledge with on_timeout: fail, command, webhook, or waves of those), or set "
        "consumer_cache_ttl to your consumers' real SECRETS_CACHE_TTL"
    )
