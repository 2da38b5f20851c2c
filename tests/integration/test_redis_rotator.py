"""The ``redis`` kind against a throwaway redis-server, beyond the contract: ACL changes
persisted (they survive a restart of the server), and a missing user refused, not created."""

from __future__ import annotations

import subprocess

import pytest

from rotation.errors import TargetRejected
from rotation.providers.memory import MemoryProvider
from rotation.run.states import RunState
from tests.backends.redis_acl import RedisAclServer, _wait_ready
from tests.contract.harness import Rotation, Subject


def subject(server: RedisAclServer, user: str, **target: object) -> Subject:
    provider = MemoryProvider()
    provider.write("redis/admin", server.credential(server.admin_user, server.admin_password))
    result = Subject(
        "redis",
        "redis",
        {"admin_secret": "redis/admin", "connect_timeout": 3, **target},
        provider,
        lambda v: server.accepts(v["username"], v["password"]),  # type: ignore[index]
    )
    provider.write(result.secret, server.credential(user, "first-password"))
    return result


def restart(server: RedisAclServer) -> None:
    server.process.kill()
    server.process.wait(10)
    server.process = subprocess.Popen(
        ["redis-server", str(server.root / "redis.conf")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _wait_ready(server, 10)


@pytest.mark.parametrize("persist", ["auto", "none"])
def test_acl_changes_survive_a_restart_unless_persist_is_none(
    redis_acl_server: RedisAclServer, persist: str
) -> None:
    server = redis_acl_server
    admin = server.admin_client()
    try:
        admin.execute_command("ACL", "SETUSER", "app", "on", ">first-password", "~*", "+@all")
        admin.execute_command("CONFIG", "REWRITE")  # the user as the server starts with it
    finally:
        admin.close()
    s = subject(server, "app", persist=persist)
    run = Rotation(s).finish()
    new = run.new_value()
    restart(server)
    if persist == "auto":  # no aclfile: CONFIG REWRITE wrote the user into redis.conf
        assert s.works(new) and not s.works(run.initial)
    else:  # in memory only: the restarted server knows only the old password
        assert not s.works(new) and s.works(run.initial)


def test_a_missing_user_is_refused_not_created(redis_acl_server: RedisAclServer) -> None:
    s = subject(redis_acl_server, "ghost")
    run = Rotation(s).until(RunState.CREATED)
    with pytest.raises(TargetRejected, match="no ACL user 'ghost'") as refused:
        run.step()
    assert not refused.value.retryable
    admin = redis_acl_server.admin_client()
    try:
        assert admin.execute_command("ACL", "GETUSER", "ghost") is None
    finally:
        admin.close()
