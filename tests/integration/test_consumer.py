"""The consumer agent against a throwaway Redis the test stops and starts: losing Redis never
breaks ``get()``, and the agent resubscribes (and re-announces itself) when Redis returns."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from rotation import SecretsManager
from rotation.client.events import RotationEvent
from rotation.providers.memory import MemoryProvider
from rotation.rollout import Announcement, RolloutBus


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThrowawayRedis:
    def __init__(self, workdir: Path) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.skip("redis-server is not installed")
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.binary is not None
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_timeout=1).ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("throwaway redis did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def throwaway_redis(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def wait(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_losing_redis_never_breaks_get_and_the_agent_comes_back(throwaway_redis) -> None:
    backend = MemoryProvider()
    secret = f"svc_{uuid.uuid4().hex[:6]}/token"
    backend.write(secret, "v1")
    now = [0.0]
    manager = SecretsManager(backend, cache_ttl=30, clock=lambda: now[0])
    moved: list[RotationEvent] = []
    manager.on_rotate(secret, moved.append)
    assert manager.get(secret) == "v1"
    agent = manager.subscribe(throwaway_redis.url, heartbeat_ttl=1.5)
    assert agent.connected.wait(5)

    throwaway_redis.stop()
    assert wait(lambda: not agent.connected.is_set())
    assert manager.get(secret) == "v1"  # the cache still serves
    backend.write(secret, "v2")  # a rotation nobody could announce
    assert manager.get(secret) == "v1"  # within the TTL
    now[0] += 30
    assert manager.get(secret) == "v2"  # the TTL is the fallback

    throwaway_redis.start()
    assert agent.connected.wait(15)
    bus = RolloutBus(throwaway_redis.url)
    assert wait(lambda: bus.live_consumers(secret) == [agent.consumer_id])
    backend.write(secret, "v3")
    promotion = Announcement(secret, "v3-version", 7)
    bus.publish(promotion)
    assert wait(lambda: bus.acks(promotion) == {agent.consumer_id: "ok"})
    assert moved and moved[-1].version == "v3-version"
    assert manager.get(secret) == "v3"  # invalidated on the announcement, not the TTL
    manager.close()
    assert bus.live_consumers(secret) == []  # a clean shutdown withdraws at once
    bus.close()


def test_a_rollback_announcement_moves_a_consumer_back_and_is_acknowledged_apart(
    throwaway_redis,
) -> None:
    """A consumer that moved to v2 hears "v1 is current again" (run 8 rolled back): it drops
    its cache, runs its callbacks with ``rollback_of`` set and acknowledges under a key of its
    own; a version it moved to in an earlier run is no excuse not to move again."""
    backend = MemoryProvider()
    secret = f"svc_{uuid.uuid4().hex[:6]}/token"
    backend.write(secret, "v1")
    manager = SecretsManager(backend, cache_ttl=300)
    moved: list[RotationEvent] = []
    manager.on_rotate(secret, moved.append)
    assert manager.get(secret) == "v1"
    agent = manager.subscribe(throwaway_redis.url, heartbeat_ttl=3)
    assert agent.connected.wait(5)
    bus = RolloutBus(throwaway_redis.url)
    try:
        earlier = Announcement(secret, "version-1", 7)  # v1 was promoted by run 7
        bus.publish(earlier)
        assert wait(lambda: bus.acks(earlier) == {agent.consumer_id: "ok"})
        backend.write(secret, "v2")
        promotion = Announcement(secret, "version-2", 8)
        bus.publish(promotion)
        assert wait(lambda: bus.acks(promotion) == {agent.consumer_id: "ok"})
        assert manager.get(secret) == "v2"
        backend.write(secret, "v1")  # the rollback makes v1 current again
        rollback = Announcement(secret, "version-1", 8, rollback_of="version-2")
        bus.publish(rollback)
        assert wait(lambda: bus.acks(rollback) == {agent.consumer_id: "ok"})
        assert manager.get(secret) == "v1"
        assert [(e.version, e.rollback_of) for e in moved] == [
            ("version-1", None),
            ("version-2", None),
            ("version-1", "version-2"),
        ]
        assert bus.ack_key(rollback) != bus.ack_key(earlier)
    finally:
        manager.close()
        bus.close()
