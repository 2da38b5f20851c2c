"""The consumer agent: keeps an application's SecretsManager in step with rotations.

When a secret the application has read is promoted, the agent drops that cache entry, runs the
callbacks registered with ``manager.on_rotate(name, callback)`` (rebuild a connection pool, an
HTTP client...), then acknowledges ``(consumer id, secret, version)`` so the engine may retire the
old credential. A rollback announcement (the previous version is current again) is followed the
same way, so the engine may revoke the abandoned credential. A heartbeat announces which
secrets the consumer uses. Losing Redis never breaks
``get()``: the cache's TTL still applies, and the agent resubscribes when Redis returns, dropping
its whole cache because it may have missed promotions meanwhile.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import uuid
from collections import OrderedDict
from typing import Protocol

import redis

from rotation.client.events import RotateCallback, RotationEvent
from rotation.rollout import Announcement, RolloutBus

__all__ = ["ConsumedSecrets", "ConsumerAgent"]

log = logging.getLogger("keyturn.consumer")


class ConsumedSecrets(Protocol):
    """What the agent needs of the application's manager (``SecretsManager`` is one)."""

    def invalidate(self, name: str | None = None) -> None:
        """Drop ``name`` (or everything) from the cache."""
        ...

    def secrets_in_use(self) -> set[str]:
        """The names this application reads: what the heartbeat announces."""
        ...

    def rotate_callbacks(self, name: str) -> list[RotateCallback]:
        """The callbacks registered for ``name``."""
        ...


class ConsumerAgent:
    """A background thread: subscribe, heartbeat, invalidate, call back, acknowledge."""

    def __init__(
        self,
        manager: ConsumedSecrets,
        bus: RolloutBus,
        *,
        consumer_id: str | None = None,
        heartbeat_ttl: float = 15.0,
    ) -> None:
        self.manager = manager
        self.bus = bus
        self.consumer_id = consumer_id or (
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        )
        self.heartbeat_ttl = heartbeat_ttl
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._beater: threading.Thread | None = None
        self._handled: OrderedDict[Announcement, str] = OrderedDict()

    def start(self) -> ConsumerAgent:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"keyturn-consumer-{self.consumer_id}", daemon=True
            )
            self._thread.start()
            # heartbeats run apart from callbacks: a slow pool rebuild must not look like death
            self._beater = threading.Thread(
                target=self._beat_loop, name=f"keyturn-heartbeat-{self.consumer_id}", daemon=True
            )
            self._beater.start()
        return self

    def stop(self, leave: bool = True) -> None:
        """Stop the thread; ``leave`` also withdraws this consumer at once."""
        self._stop.set()
        for thread in (self._thread, self._beater):
            if thread is not None:
                thread.join(10)
        if leave:
            try:
                self.bus.leave(self.consumer_id, self.manager.secrets_in_use())
            except (redis.RedisError, OSError):
                pass
        self.bus.close()

    # --- the loop --------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self.bus.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                pubsub.subscribe(self.bus.channel)
                # we may have missed promotions while away: forget everything cached
                self.manager.invalidate()
                self._beat()
                self.connected.set()
                backoff = 0.5
                self._listen(pubsub)
            except (redis.RedisError, OSError) as exc:
                if self.connected.is_set():
                    log.warning(
                        "lost Redis; reads fall back to the cache TTL until it returns (%s)",
                        type(exc).__name__,
                        extra={"action": "consumer.disconnected", "consumer": self.consumer_id},
                    )
                self.connected.clear()
                self._stop.wait(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, 5.0)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except (redis.RedisError, OSError):
                        pass

    def _listen(self, pubsub: redis.client.PubSub) -> None:
        while not self._stop.is_set():
            message = pubsub.get_message(timeout=1.0)
            if message is not None and message.get("type") == "message":
                announcement = Announcement.decode(message["data"])
                if announcement is not None:
                    self._handle(announcement)

    def _beat_loop(self) -> None:
        every = max(0.2, self.heartbeat_ttl / 3)
        while not self._stop.wait(every):
            try:
                self._beat()
            except (redis.RedisError, OSError):
                continue  # the listener reports the outage; keep trying

    def _beat(self) -> None:
        secrets = self.manager.secrets_in_use()
        self.bus.heartbeat(
            self.consumer_id,
            secrets,
            self.heartbeat_ttl,
            {"host": socket.gethostname(), "pid": os.getpid()},
        )

    def _handle(self, announcement: Announcement) -> None:
        if announcement.secret not in self.manager.secrets_in_use():
            return
        # keyed by the whole announcement: a rollback back to a version this consumer moved to
        # in an earlier run is a new move
        outcome = self._handled.get(announcement)
        if outcome is None:
            outcome = self._move(announcement)
            self._handled[announcement] = outcome
            while len(self._handled) > 1000:
                self._handled.popitem(last=False)
        # re-publications get the same answer again (our first ack may have been lost)
        self.bus.acknowledge(self.consumer_id, announcement, outcome)

    def _move(self, announcement: Announcement) -> str:
        self.manager.invalidate(announcement.secret)
        event = RotationEvent(
            announcement.secret,
            announcement.version,
            announcement.run_id,
            announcement.rollback_of,
        )
        for callback in self.manager.rotate_callbacks(announcement.secret):
            try:
                callback(event)
            except Exception as exc:
                log.error(
                    "on_rotate callback for %s failed: %s",
                    announcement.secret,
                    type(exc).__name__,
                    extra={"action": "consumer.callback_failed", "secret": announcement.secret},
                )
                where = getattr(callback, "__name__", "callback")
                return f"failed: {type(exc).__name__} in {where}"
        log.info(
            "moved to the %s version of %s",
            "previous" if announcement.is_rollback else "new",
            announcement.secret,
            extra={
                "action": "consumer.moved_back" if announcement.is_rollback else "consumer.moved",
                "secret": announcement.secret,
            },
        )
        return "ok"
