"""The rollout bus: how the engine and the applications that use a secret talk, over Redis.

Every channel and key carries the deployment's namespace ``<ns>``, because Redis pub/sub does
not separate channels by database number: ``KEYTURN_NAMESPACE`` when set, else ``db<N>`` from the
bus's Redis URL (``redis://host:6379/1`` -> ``db1``). Two deployments on one Redis therefore hear
each other only if they share a database number and no namespace (say so in their settings).
Keys (secret names are safe in keys: see rotation/names.py):

- ``keyturn:<ns>:rotations`` (pub/sub channel): ``{"secret", "version", "run_id"}`` when a version
  is promoted, and ``{"secret", "version", "run_id", "rollback_of"}`` when a run's promotion is
  rolled back (``version`` is current again, ``rollback_of`` is abandoned); re-published at each
  re-check, so a consumer that missed one hears the next.
- ``keyturn:<ns>:consumers:<secret>`` (sorted set): consumer id -> heartbeat expiry (Unix
  seconds). A consumer that stops heart-beating stops counting once its expiry passes.
- ``keyturn:<ns>:consumer:<id>`` (string, with TTL): what the consumer announced (host, pid,
  secrets).
- ``keyturn:<ns>:acks:<secret>:<version>`` (hash): consumer id -> ``ok`` or ``failed: <reason>``
  (``...:<version>:rollback:<run_id>`` for a rollback). The first acknowledgement gives it a TTL
  of a day; once the restart step is done the engine shortens it to ``ACK_RETENTION_SECONDS``.
  A consumer's late re-acknowledgement (of a duplicate announcement) never extends a TTL, so no
  acknowledgement outlives its run by more than that.

No value ever crosses the bus: only names, version ids, run ids and consumer ids.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from rotation.config import redis_namespace as namespace
from rotation.config import redis_url

__all__ = ["Announcement", "RolloutBus", "namespace", "redis_url"]

ACK_TTL_SECONDS = 24 * 3600
#: How long acknowledgements stay once the engine is done with them (late duplicates land here).
ACK_RETENTION_SECONDS = 60


#: Sets a hash field and gives the key a TTL only when it has none (``EXPIRE ... NX`` needs
#: Redis 7; this works on 6 too), atomically.
_ACK_SCRIPT = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return 1
"""


@dataclass(frozen=True)
class Announcement:
    """What is published: which secret, which version is now current, which run; for a
    rollback, ``rollback_of`` is the version the run abandons (``version`` is current again)."""

    secret: str
    version: str
    run_id: int | None = None
    rollback_of: str | None = None

    @property
    def is_rollback(self) -> bool:
        return self.rollback_of is not None

    def encode(self) -> str:
        body: dict[str, Any] = {
            "secret": self.secret,
            "version": self.version,
            "run_id": self.run_id,
        }
        if self.rollback_of is not None:
            body["rollback_of"] = self.rollback_of
        return json.dumps(body)

    @classmethod
    def decode(cls, data: str | bytes) -> Announcement | None:
        try:
            body = json.loads(data)
            abandoned = body.get("rollback_of")
            return cls(
                str(body["secret"]),
                str(body["version"]),
                body.get("run_id"),
                str(abandoned) if abandoned is not None else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


class RolloutBus:
    """Both sides of the protocol over one Redis client."""

    def __init__(
        self,
        url: str | None = None,
        client: redis.Redis | None = None,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        url = url or redis_url(environ)
        #: This deployment's namespace: every channel and key below carries it.
        self.namespace = namespace(url, environ)
        self.prefix = f"keyturn:{self.namespace}"
        #: The pub/sub channel promotions are announced on.
        self.channel = f"{self.prefix}:rotations"
        self.client: redis.Redis = client or redis.Redis.from_url(
            url,
            socket_timeout=5,
            socket_connect_timeout=5,
            health_check_interval=30,
            decode_responses=True,
        )

    # --- engine side -----------------------------------------------------------------------

    def publish(self, announcement: Announcement) -> int:
        """``PUBLISH``; returns how many subscribers got it."""
        return int(self.client.publish(self.channel, announcement.encode()))

    def live_consumers(self, secret: str, now: float | None = None) -> list[str]:
        """Consumers of ``secret`` whose heartbeat has not lapsed (expired ones are dropped)."""
        key = f"{self.prefix}:consumers:{secret}"
        now = time.time() if now is None else now
        pipe = self.client.pipeline()
        pipe.zremrangebyscore(key, "-inf", now)
        pipe.zrangebyscore(key, now, "+inf")
        _, members = pipe.execute()
        return sorted(members)

    def acks(self, announcement: Announcement) -> dict[str, str]:
        """Consumer id -> ``ok`` / ``failed: ...`` for ``announcement``."""
        found: dict[str, str] = self.client.hgetall(self.ack_key(announcement))  # type: ignore[assignment]
        return dict(found)

    def forget_acks(self, announcement: Announcement) -> None:
        """Done with these acknowledgements: they expire within ``ACK_RETENTION_SECONDS``.

        Not deleted: a consumer answering a duplicate announcement after this would re-create
        the hash; it lands in the expiring one instead, without extending it."""
        self.client.expire(self.ack_key(announcement), ACK_RETENTION_SECONDS)

    def uptime(self) -> float | None:
        """Seconds since the Redis server started (None when ``INFO`` is not allowed): a
        restarted server may have lost every heartbeat and acknowledgement."""
        try:
            info = self.client.info("server")
        except redis.ResponseError:
            return None
        seconds = info.get("uptime_in_seconds") if isinstance(info, dict) else None
        return float(seconds) if isinstance(seconds, int | float) else None

    # --- consumer side ---------------------------------------------------------------------

    def heartbeat(
        self, consumer_id: str, secrets: Iterable[str], ttl: float, info: dict[str, Any]
    ) -> None:
        """Announce ``consumer_id`` as a live user of ``secrets`` for ``ttl`` seconds."""
        expiry = time.time() + ttl
        names = sorted(set(secrets))
        pipe = self.client.pipeline()
        for name in names:
            pipe.zadd(f"{self.prefix}:consumers:{name}", {consumer_id: expiry})
            pipe.expire(f"{self.prefix}:consumers:{name}", int(ttl) + ACK_TTL_SECONDS)
        pipe.set(
            f"{self.prefix}:consumer:{consumer_id}",
            json.dumps({**info, "secrets": names}),
            ex=max(1, int(ttl)),
        )
        pipe.execute()

    def leave(self, consumer_id: str, secrets: Iterable[str]) -> None:
        """Stop counting as a consumer at once (clean shutdown)."""
        pipe = self.client.pipeline()
        for name in set(secrets):
            pipe.zrem(f"{self.prefix}:consumers:{name}", consumer_id)
        pipe.delete(f"{self.prefix}:consumer:{consumer_id}")
        pipe.execute()

    def acknowledge(self, consumer_id: str, announcement: Announcement, outcome: str) -> None:
        """Record ``outcome`` for ``announcement``; the key's TTL is set only when it has none."""
        self.client.eval(
            _ACK_SCRIPT, 1, self.ack_key(announcement), consumer_id, outcome, ACK_TTL_SECONDS
        )

    def ack_key(self, announcement: Announcement) -> str:
        key = f"{self.prefix}:acks:{announcement.secret}:{announcement.version}"
        if announcement.rollback_of is not None:
            key += f":rollback:{announcement.run_id}"
        return key

    def close(self) -> None:
        self.client.close()
