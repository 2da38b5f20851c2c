"""Two deployments on one Redis do not hear each other (Redis pub/sub ignores database numbers,
so every rollout channel and key carries the deployment's namespace)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest

from rotation import SecretsManager
from rotation.client.events import RotationEvent
from rotation.errors import ConfigurationError
from rotation.providers.memory import MemoryProvider
from rotation.rollout import Announcement, RolloutBus, namespace

REDIS = "redis://127.0.0.1:6379"


def wait(predicate: Callable[[], object], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


class Deployment:
    """An application of one deployment: a manager following rotations on its own bus URL."""

    def __init__(self, url: str, secret: str) -> None:
        self.backend = MemoryProvider()
        self.backend.write(secret, "v1")
        self.manager = SecretsManager(self.backend, cache_ttl=300)
        self.moved: list[RotationEvent] = []
        self.manager.on_rotate(secret, self.moved.append)
        self.agent = self.manager.subscribe(url, heartbeat_ttl=5)
        assert self.agent.connected.wait(5)


@pytest.mark.parametrize(
    ("staging", "production", "environ"),
    [
        # the same Redis, two database numbers: the default namespaces differ (db14, db15)
        (f"{REDIS}/14", f"{REDIS}/15", ({}, {})),
        # the same database: explicit namespaces keep them apart
        (
            f"{REDIS}/14",
            f"{REDIS}/14",
            ({"KEYTURN_NAMESPACE": "staging"}, {"KEYTURN_NAMESPACE": "prod"}),
        ),
    ],
)
def test_two_deployments_on_one_redis_hear_only_their_own_rotations(
    staging: str,
    production: str,
    environ: tuple[dict[str, str], dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = f"shared_{uuid.uuid4().hex[:6]}/db"  # both deployments use a secret of this name
    monkeypatch.setenv("KEYTURN_NAMESPACE", environ[0].get("KEYTURN_NAMESPACE", ""))
    stage_app = Deployment(staging, secret)
    stage_engine = RolloutBus(staging)
    monkeypatch.setenv("KEYTURN_NAMESPACE", environ[1].get("KEYTURN_NAMESPACE", ""))
    prod_app = Deployment(production, secret)
    prod_engine = RolloutBus(production)
    try:
        assert stage_engine.namespace != prod_engine.namespace
        assert wait(lambda: stage_engine.live_consumers(secret) == [stage_app.agent.consumer_id])
        assert prod_engine.live_consumers(secret) == [prod_app.agent.consumer_id]

        promotion = Announcement(secret, "stage-v2", 1)
        stage_engine.publish(promotion)
        assert wait(lambda: stage_engine.acks(promotion) == {stage_app.agent.consumer_id: "ok"})
        time.sleep(0.5)  # time enough for a crossed message to arrive
        assert [e.version for e in stage_app.moved] == ["stage-v2"]
        assert prod_app.moved == []  # production never heard staging's promotion
        assert prod_engine.acks(promotion) == {}
    finally:
        for app in (stage_app, prod_app):
            app.manager.close()
        stage_engine.close()
        prod_engine.close()


def test_the_namespace_comes_from_the_setting_or_the_database_number() -> None:
    assert namespace("redis://h:6379/3", {}) == "db3"
    assert namespace("redis://h:6379", {}) == "db0"
    assert namespace("rediss://h:6380/0?db=7", {}) == "db7"
    assert namespace("redis://h/2", {"KEYTURN_NAMESPACE": "prod-eu"}) == "prod-eu"
    with pytest.raises(ConfigurationError, match="KEYTURN_NAMESPACE"):
        namespace("redis://h/2", {"KEYTURN_NAMESPACE": "prod eu"})
