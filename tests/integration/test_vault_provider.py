"""The vault provider against a real OpenBao dev server, also through the FaultProxy.

What the contract suite cannot say: authentication (token, AppRole, re-login after revocation,
refused and policy-less tokens), check-and-set between two instances, what plain readers
(hvac, the ``bao`` CLI) see during a rotation, the KV data layout, crash-safe promotion, and
behaviour when the server errs, loses replies or is down.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import hvac
import pytest

from rotation.client.manager import SecretsManager
from rotation.errors import (
    AuthenticationFailed,
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    PermissionDenied,
    SecretNotFound,
    VersionConflict,
)
from rotation.providers.vault.auth import AppRoleAuth, KubernetesAuth, TokenAuth
from rotation.providers.vault.provider import OBJECT_KEY, VaultProvider
from rotation.values import Stage
from tests.backends.faultproxy import FaultProxy
from tests.backends.openbao import find_bao, free_port_pair, start_openbao
from tests.backends.vault import APPROLE_POLICY, OpenBao, new_prefix

MOUNT = "secret"


def _name(stem: str = "s") -> str:
    return f"{stem}_{uuid.uuid4().hex[:8]}"


def _provider(openbao: OpenBao, prefix: str, **env: str) -> VaultProvider:
    environ = {"VAULT_ADDR": openbao.address, "VAULT_PATH_PREFIX": prefix, **env}
    if not any(k in environ for k in ("VAULT_TOKEN", "VAULT_ROLE_ID", "VAULT_ROLE")):
        environ["VAULT_TOKEN"] = openbao.root_token
    return VaultProvider.from_env(environ)


@pytest.fixture
def providers(openbao: OpenBao) -> Iterator[list[VaultProvider]]:
    """Providers a test builds; closed at the end."""
    made: list[VaultProvider] = []
    yield made
    for provider in made:
        provider.close()


def _plain_read(client: hvac.Client, path: str, version: int | None = None) -> dict[str, Any]:
    """What ``vault kv get`` returns: the data of the latest (or given) version."""
    answer = client.secrets.kv.v2.read_secret_version(
        path=path, version=version, mount_point=MOUNT, raise_on_deleted_version=True
    )
    return dict(answer["data"]["data"])


def _bao(openbao: OpenBao, *args: str) -> str:
    """Run the real ``bao`` CLI against the test server."""
    env = {"BAO_ADDR": openbao.address, "BAO_TOKEN": openbao.root_token, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [str(find_bao()), *args], env=env, capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout


def _policy_token(client: hvac.Client, policy: str, hcl: str) -> str:
    client.sys.create_or_update_policy(policy, hcl)
    answer = client.auth.token.create(policies=[policy], ttl="10m")
    return str(answer["auth"]["client_token"])


# --- authentication -----------------------------------------------------------------------


def test_token_auth_round_trip(vault_provider: VaultProvider) -> None:
    name = _name()
    assert vault_provider.write(name, "one") == "1"
    assert vault_provider.write(name, "two") == "2"
    got = vault_provider.read(name)
    assert (got.value, got.version_id) == ("two", "2")


def test_approle_login_for_real(openbao: OpenBao, providers: list[VaultProvider]) -> None:
    provider = _provider(
        openbao,
        new_prefix(),
        VAULT_ROLE_ID=openbao.role_id,
        VAULT_SECRET_ID=openbao.new_secret_id(),
    )
    providers.append(provider)
    assert isinstance(provider._conn.auth, AppRoleAuth)
    name = _name()
    provider.write(name, "via-approle")
    assert provider.read(name).value == "via-approle"
    token = provider.client.token
    assert token and token != openbao.root_token
    info = provider.client.auth.token.lookup_self()["data"]
    assert APPROLE_POLICY in info["policies"]


def test_invalid_token_is_authentication_failed(
    openbao: OpenBao, providers: list[VaultProvider]
) -> None:
    provider = _provider(openbao, new_prefix(), VAULT_TOKEN="s.not-a-real-token")
    providers.append(provider)
    with pytest.raises(AuthenticationFailed) as info:
        provider.read(_name())
    assert str(info.value).startswith("Vault authentication failed")
    assert "VAULT_TOKEN" in str(info.value) and "VAULT_ADDR" in str(info.value)
    assert "s.not-a-real-token" not in str(info.value)
    assert isinstance(info.value.__cause__, hvac.exceptions.Forbidden)


def test_wrong_secret_id_is_authentication_failed(
    openbao: OpenBao, providers: list[VaultProvider]
) -> None:
    provider = _provider(
        openbao, new_prefix(), VAULT_ROLE_ID=openbao.role_id, VAULT_SECRET_ID=str(uuid.uuid4())
    )
    providers.append(provider)
    with pytest.raises(AuthenticationFailed) as info:
        provider.write(_name(), "v")
    assert str(info.value).startswith("Vault authentication failed: ")
    assert "VAULT_SECRET_ID" in str(info.value)


def test_revoked_approle_token_logs_in_again_once(
    openbao: OpenBao, vault_root: hvac.Client, providers: list[VaultProvider]
) -> None:
    provider = _provider(
        openbao,
        new_prefix(),
        VAULT_ROLE_ID=openbao.role_id,
        VAULT_SECRET_ID=openbao.new_secret_id(),
    )
    providers.append(provider)
    name = _name()
    provider.write(name, "before")
    old = provider.client.token
    vault_root.auth.token.revoke(old)
    assert provider.read(name).value == "before"  # 403, lookup-self fails, login, retry
    assert provider.client.token not in ("", old)
    provider.write(name, "after")
    assert provider.read(name).value == "after"


def test_revoked_static_token_cannot_recover(
    openbao: OpenBao, vault_root: hvac.Client, providers: list[VaultProvider]
) -> None:
    token = vault_root.auth.token.create(policies=["root"], ttl="10m")["auth"]["client_token"]
    provider = _provider(openbao, new_prefix(), VAULT_TOKEN=token)
    providers.append(provider)
    name = _name()
    provider.write(name, "v")
    vault_root.auth.token.revoke(token)
    with pytest.raises(AuthenticationFailed, match=r"^Vault authentication failed: "):
        provider.read(name)


def test_valid_token_without_policy_is_permission_denied(
    openbao: OpenBao, vault_root: hvac.Client, providers: list[VaultProvider]
) -> None:
    prefix = new_prefix()
    hcl = f'path "secret/data/{prefix}*" {{ capabilities = ["read"] }}'
    token = _policy_token(vault_root, f"ro-{prefix[:-1]}", hcl)
    name = _name()
    vault_root.secrets.kv.v2.create_or_update_secret(
        path=prefix + name, secret={"value": "readable"}, mount_point=MOUNT
    )
    provider = _provider(openbao, prefix, VAULT_TOKEN=token)
    providers.append(provider)
    assert provider.read(name).value == "readable"
    with pytest.raises(PermissionDenied) as info:
        provider.write(name, "nope")  # reading metadata is not allowed by this policy
    assert not str(info.value).startswith("Vault authentication failed")
    assert _plain_read(vault_root, prefix + name) == {"value": "readable"}


def test_kubernetes_token_file_missing(openbao: OpenBao, providers: list[VaultProvider]) -> None:
    provider = _provider(
        openbao, new_prefix(), VAULT_ROLE="app", VAULT_K8S_TOKEN_PATH="/nonexistent/token"
    )
    providers.append(provider)
    assert isinstance(provider._conn.auth, KubernetesAuth)
    with pytest.raises(AuthenticationFailed, match="VAULT_K8S_TOKEN_PATH"):
        provider.read(_name())


# --- check-and-set ------------------------------------------------------------------------


def test_cas_conflict_between_two_instances(
    openbao: OpenBao, providers: list[VaultProvider]
) -> None:
    prefix = new_prefix()
    first, second = _provider(openbao, prefix), _provider(openbao, prefix)
    providers += [first, second]
    name = _name()
    first.write(name, "base")
    seen_by_first, seen_by_second = first.read(name), second.read(name)
    first.write(name, "first wins", expected_version=seen_by_first.version_id)
    with pytest.raises(VersionConflict):
        second.write(name, "second loses", expected_version=seen_by_second.version_id)
    assert second.read(name).value == "first wins"
    assert [v.version_id for v in second.versions(name)] == ["1", "2"]


def test_racing_blind_writers_never_overwrite_silently(
    openbao: OpenBao, providers: list[VaultProvider]
) -> None:
    prefix = new_prefix()
    writers = [_provider(openbao, prefix) for _ in range(6)]
    providers += writers
    name = _name()
    writers[0].write(name, "seed")
    won: list[str] = []
    lost: list[BaseException] = []
    barrier = threading.Barrier(len(writers))

    def race(i: int) -> None:
        barrier.wait()
        for round_ in range(5):
            try:
                won.append(writers[i].write(name, f"w{i}-{round_}"))
            except BaseException as exc:
                lost.append(exc)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(writers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(isinstance(e, VersionConflict) for e in lost), lost
    assert len(won) == len(set(won))  # every success is its own KV version
    meta = writers[0]._metadata(name)
    assert int(meta["current_version"]) == 1 + len(won)


# --- what plain readers see, and the data layout -------------------------------------------


def test_plain_readers_see_current_while_pending(
    openbao: OpenBao, vault_provider: VaultProvider, vault_root: hvac.Client
) -> None:
    name = _name("db_password")
    path = vault_provider.prefix + name
    vault_provider.write(name, "old")
    token = uuid.uuid4().hex
    assert vault_provider.stage_pending(name, "new", token=token) == token
    assert _plain_read(vault_root, path) == {"value": "old"}
    cli = json.loads(_bao(openbao, "kv", "get", "-format=json", f"-mount={MOUNT}", path))
    assert cli["data"]["data"] == {"value": "old"}
    assert vault_provider.list() == [name]
    assert [v.stages for v in vault_provider.versions(name)] == [
        {Stage.CURRENT},
        {Stage.PENDING},
    ]
    assert vault_provider.promote(name, token=token) == "2"
    assert _plain_read(vault_root, path) == {"value": "new"}
    meta = vault_root.secrets.kv.v2.read_secret_metadata(path=path, mount_point=MOUNT)["data"]
    assert meta["custom_metadata"] == {"keyturn-token-2": token}
    assert vault_provider.list() == [name]


def test_strings_written_by_plain_clients_read_as_strings(
    openbao: OpenBao, vault_provider: VaultProvider, vault_root: hvac.Client
) -> None:
    by_hvac, by_cli = _name("api_key"), _name("db_password")
    vault_root.secrets.kv.v2.create_or_update_secret(
        path=vault_provider.prefix + by_hvac, secret={"value": "k-123"}, mount_point=MOUNT
    )
    _bao(openbao, "kv", "put", f"-mount={MOUNT}", vault_provider.prefix + by_cli, "value=pw-456")
    assert vault_provider.read(by_hvac).value == "k-123"
    assert vault_provider.read(by_cli).value == "pw-456"
    assert sorted(vault_provider.list()) == sorted([by_hvac, by_cli])


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("plain", {"value": "plain"}),
        ({"username": "app", "password": "pw"}, {"username": "app", "password": "pw"}),
        ({"value": "x", "note": "y"}, {"value": "x", "note": "y"}),
        ({"value": 5}, {"value": 5}),
        ({"value": "looks like a string"}, {OBJECT_KEY: {"value": "looks like a string"}}),
        ({OBJECT_KEY: {"a": 1}}, {OBJECT_KEY: {OBJECT_KEY: {"a": 1}}}),
        ({}, {}),
    ],
)
def test_data_layout(
    vault_provider: VaultProvider, vault_root: hvac.Client, value: Any, stored: dict[str, Any]
) -> None:
    name = _name()
    vault_provider.write(name, value)
    assert _plain_read(vault_root, vault_provider.prefix + name) == stored
    got = vault_provider.read(name).value
    assert got == value and isinstance(got, str) == isinstance(value, str)


# --- rotation: promote, rollback, discard, crash safety -----------------------------------


@pytest.mark.parametrize("crash_in", ["_mark", "_main_write", "_claim", "_drop_pending"])
def test_promote_is_idempotent_after_a_crash(
    vault_provider: VaultProvider,
    vault_root: hvac.Client,
    monkeypatch: pytest.MonkeyPatch,
    crash_in: str,
) -> None:
    name = _name()
    vault_provider.write(name, "old")
    token = uuid.uuid4().hex
    vault_provider.stage_pending(name, "new", token=token)
    real_cas_write = vault_provider._cas_write
    targets = {
        "_mark": vault_provider._pending_path(name),
        "_main_write": vault_provider._path(name),
    }

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("simulated crash")

    if crash_in in targets:

        def cas_write(path: str, data: Any, cas: int, n: str) -> int:
            if path == targets[crash_in]:
                raise RuntimeError("simulated crash")
            return real_cas_write(path, data, cas, n)

        monkeypatch.setattr(vault_provider, "_cas_write", cas_write)
    else:
        monkeypatch.setattr(vault_provider, crash_in, crash)
    with pytest.raises(RuntimeError):
        vault_provider.promote(name, token=token)
    monkeypatch.undo()
    assert vault_provider.read(name).value == ("old" if crash_in in targets else "new")
    assert vault_provider.promote(name, token=token) == "2"
    assert vault_provider.promote(name, token=token) == "2"
    assert [v.version_id for v in vault_provider.versions(name)] == ["1", "2"]
    assert vault_provider.read(name).token == token
    with pytest.raises(SecretNotFound):
        vault_provider.read(name, stage=Stage.PENDING)
    with pytest.raises(hvac.exceptions.InvalidPath):
        vault_root.secrets.kv.v2.read_secret_metadata(
            path=vault_provider._pending_path(name), mount_point=MOUNT
        )
    assert vault_provider.stage_pending(name, "new", token=token) == "2"  # still idempotent


def test_rollback_writes_previous_as_a_new_version(
    vault_provider: VaultProvider, vault_root: hvac.Client
) -> None:
    name = _name()
    vault_provider.write(name, "old")
    token = uuid.uuid4().hex
    vault_provider.stage_pending(name, "new", token=token)
    vault_provider.promote(name, token=token)
    assert vault_provider.rollback(name, token=token) == "3"
    assert _plain_read(vault_root, vault_provider.prefix + name) == {"value": "old"}
    assert vault_provider.rollback(name, token=token) == "3"
    assert vault_provider.read(name, stage=Stage.PREVIOUS).value == "new"
    with pytest.raises(VersionConflict):
        vault_provider.promote(name, token=token)  # promoted once, rolled back since


def test_previous_skips_deleted_versions(
    vault_provider: VaultProvider, vault_root: hvac.Client
) -> None:
    name = _name()
    for value in ("one", "two", "three"):
        vault_provider.write(name, value)
    vault_root.secrets.kv.v2.delete_secret_versions(
        path=vault_provider.prefix + name, versions=[2], mount_point=MOUNT
    )
    previous = vault_provider.read(name, stage=Stage.PREVIOUS)
    assert (previous.value, previous.version_id) == ("one", "1")
    stages = {v.version_id: v.stages for v in vault_provider.versions(name)}
    assert stages == {"1": {Stage.PREVIOUS}, "2": set(), "3": {Stage.CURRENT}}


def test_restaging_under_another_token_replaces_pending(vault_provider: VaultProvider) -> None:
    name = _name()
    vault_provider.write(name, "old")
    vault_provider.stage_pending(name, "first", token="t1")
    vault_provider.stage_pending(name, "second", token="t2")
    assert vault_provider.read(name, stage=Stage.PENDING).value == "second"
    with pytest.raises(SecretNotFound):
        vault_provider.promote(name, token="t1")
    vault_provider.discard_pending(name, token="t1")  # not pending: nothing happens
    assert vault_provider.promote(name, token="t2") == "2"


def test_delete_removes_every_version_and_pending(
    vault_provider: VaultProvider, vault_root: hvac.Client
) -> None:
    name = _name()
    vault_provider.write(name, "v")
    vault_provider.stage_pending(name, "p", token="t")
    vault_provider.delete(name)
    for path in (vault_provider._path(name), vault_provider._pending_path(name)):
        with pytest.raises(hvac.exceptions.InvalidPath):
            vault_root.secrets.kv.v2.read_secret_metadata(path=path, mount_point=MOUNT)
    with pytest.raises(SecretNotFound):
        vault_provider.delete(name, force=True)


def test_list_walks_folders_and_hides_keyturn(vault_provider: VaultProvider) -> None:
    names = ["app/db/password", "app/api_key", "app2", "z"]
    for n in names:
        vault_provider.write(n, "v")
    vault_provider.stage_pending("z", "pending", token="t")
    assert vault_provider.list() == sorted(names)
    assert vault_provider.list("app/") == ["app/api_key", "app/db/password"]
    assert vault_provider.list("app") == ["app/api_key", "app/db/password", "app2"]
    assert vault_provider.list("app/db/pa") == ["app/db/password"]
    assert vault_provider.list("nothing/") == []


# --- SecretsManager end to end ------------------------------------------------------------


def test_secrets_manager_from_env(openbao: OpenBao, vault_root: hvac.Client) -> None:
    prefix = new_prefix()
    manager = SecretsManager.from_env(
        {
            "SECRETS_PROVIDER": "vault",
            "VAULT_ADDR": openbao.address,
            "VAULT_TOKEN": openbao.root_token,
            "VAULT_PATH_PREFIX": prefix,
        }
    )
    try:
        assert isinstance(manager.provider, VaultProvider)
        manager.set("db_password", "secure_password_123")
        manager.set("db", {"username": "app", "password": "pw"})
        assert manager.get("db_password") == "secure_password_123"
        fresh = manager.rotate("db_password")
        assert fresh != "secure_password_123"
        assert manager.get("db_password") == fresh
        assert _plain_read(vault_root, prefix + "db_password") == {"value": fresh}
        rotated = manager.rotate("db")
        assert isinstance(rotated, dict) and rotated["username"] == "app"
        versions = manager.versions("db_password")
        assert [(v.version_id, v.stages) for v in versions] == [
            ("1", {Stage.PREVIOUS}),
            ("2", {Stage.CURRENT}),
        ]
        assert versions[1].token is not None
        assert manager.list() == ["db", "db_password"]
    finally:
        manager.close()


# --- faults -------------------------------------------------------------------------------


def _host_port(address: str) -> tuple[str, int]:
    host, port = address.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def test_reads_survive_30_percent_errors(
    openbao: OpenBao, vault_provider: VaultProvider, providers: list[VaultProvider]
) -> None:
    name = _name()
    vault_provider.write(name, "steady")
    with FaultProxy(upstream=_host_port(openbao.address), seed=1234) as proxy:
        flaky = VaultProvider(
            proxy.address, TokenAuth(openbao.root_token), path_prefix=vault_provider.prefix
        )
        providers.append(flaky)
        proxy.configure(error_rate=0.3)
        for _ in range(25):
            assert flaky.read(name).value == "steady"
        assert proxy.stats["errors"] >= 3
        assert proxy.stats["forwarded"] == 26  # 25 reads and one lookup-self (token TTL)


def test_reads_survive_dropped_connections_and_latency(
    openbao: OpenBao, vault_provider: VaultProvider, providers: list[VaultProvider]
) -> None:
    name = _name()
    vault_provider.write(name, "steady")
    with FaultProxy(upstream=_host_port(openbao.address), seed=5) as proxy:
        flaky = VaultProvider(
            proxy.address, TokenAuth(openbao.root_token), path_prefix=vault_provider.prefix
        )
        providers.append(flaky)
        proxy.configure(drop_rate=0.3)
        for _ in range(15):
            assert flaky.read(name).value == "steady"
        assert proxy.stats["drops"] >= 2
        proxy.configure(latency=0.3)
        started = time.monotonic()
        assert flaky.read(name).value == "steady"
        assert time.monotonic() - started >= 0.3


def test_fault_proxy_tcp_mode_forwards(
    openbao: OpenBao, vault_provider: VaultProvider, providers: list[VaultProvider]
) -> None:
    name = _name()
    vault_provider.write(name, "through-tcp")
    with FaultProxy(upstream=_host_port(openbao.address), mode="tcp") as proxy:
        plain = VaultProvider(
            proxy.address, TokenAuth(openbao.root_token), path_prefix=vault_provider.prefix
        )
        providers.append(plain)
        assert plain.read(name).value == "through-tcp"
        assert proxy.stats["forwarded"] >= 1


def test_lost_replies_never_double_write(
    openbao: OpenBao, vault_provider: VaultProvider, providers: list[VaultProvider]
) -> None:
    name = _name()
    version = vault_provider.write(name, "v0")
    with FaultProxy(upstream=_host_port(openbao.address), seed=99) as proxy:
        flaky = VaultProvider(
            proxy.address, TokenAuth(openbao.root_token), path_prefix=vault_provider.prefix
        )
        providers.append(flaky)
        proxy.configure(lost_reply_rate=0.3, error_rate=0.1)
        for i in range(1, 11):
            version = flaky.write(name, f"v{i}", expected_version=version)
            assert version == str(i + 1)
        assert proxy.stats["lost_replies"] >= 2
    assert [v.version_id for v in vault_provider.versions(name)] == [str(i) for i in range(2, 12)]
    assert vault_provider.read(name).value == "v10"


def test_all_errors_give_backend_unavailable_in_bounded_time(
    openbao: OpenBao, vault_provider: VaultProvider, providers: list[VaultProvider]
) -> None:
    name = _name()
    vault_provider.write(name, "v")
    with FaultProxy(upstream=_host_port(openbao.address)) as proxy:
        broken = VaultProvider(
            proxy.address, TokenAuth(openbao.root_token), path_prefix=vault_provider.prefix
        )
        providers.append(broken)
        proxy.configure(error_rate=1.0)
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as info:
            broken.read(name)
        elapsed = time.monotonic() - started
    assert elapsed < 10
    assert proxy.stats["errors"] == 5  # the first try and four retries
    assert isinstance(info.value.__cause__, hvac.exceptions.VaultDown)


def test_server_down_is_backend_unavailable_quickly(providers: list[VaultProvider]) -> None:
    provider = VaultProvider(f"http://127.0.0.1:{free_port_pair()}", TokenAuth("root"))
    providers.append(provider)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="VAULT_ADDR"):
        provider.read("anything")
    assert time.monotonic() - started < 5


def test_unmounted_mount_point_is_not_secret_not_found(
    openbao: OpenBao, providers: list[VaultProvider]
) -> None:
    provider = _provider(openbao, new_prefix(), VAULT_MOUNT_POINT="nokv")
    providers.append(provider)
    with pytest.raises(BackendError, match="VAULT_MOUNT_POINT"):
        provider.read("x")


# --- configuration and TLS ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"VAULT_TOKEN": "t"}, "VAULT_ADDR is not set"),
        ({"VAULT_ADDR": "vault:8200", "VAULT_TOKEN": "t"}, "http:// or https://"),
        ({"VAULT_ADDR": "http://x"}, "VAULT_TOKEN"),
        ({"VAULT_ADDR": "http://x", "VAULT_TOKEN": "t", "VAULT_CACERT": "/no/ca.pem"}, "CA"),
        ({"VAULT_ADDR": "http://x", "VAULT_TOKEN": "t", "VAULT_SKIP_VERIFY": "maybe"}, "true"),
        ({"VAULT_ADDR": "http://x", "VAULT_TOKEN": "t", "VAULT_PATH_PREFIX": "../x"}, "PREFIX"),
        ({"VAULT_ADDR": "http://x", "VAULT_TOKEN": "t", "VAULT_MAX_RETRIES": "-1"}, "RETRIES"),
    ],
)
def test_configuration_errors(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        VaultProvider.from_env(environ)


def test_environment_is_honoured(providers: list[VaultProvider]) -> None:
    provider = VaultProvider.from_env(
        {
            "VAULT_ADDR": "https://vault.example:8200/",
            "VAULT_TOKEN": "t",
            "VAULT_NAMESPACE": "team-a",
            "VAULT_MOUNT_POINT": "/kv/",
            "VAULT_PATH_PREFIX": "/phagen",
            "VAULT_SKIP_VERIFY": "true",
        }
    )
    providers.append(provider)
    assert (provider.mount, provider.prefix) == ("kv", "phagen/")
    assert provider.client.adapter.namespace == "team-a"
    assert provider.client.adapter._kwargs["verify"] is False
    assert provider._pending_path("a/b") == "phagen/.keyturn/pending/a/b"


@pytest.fixture(scope="module")
def openbao_tls() -> Iterator[Any]:
    server = start_openbao(tls=True)
    yield server
    server.stop()


def test_tls_is_verified_with_vault_cacert(
    openbao_tls: Any, providers: list[VaultProvider]
) -> None:
    base = {"VAULT_ADDR": openbao_tls.address, "VAULT_TOKEN": openbao_tls.root_token}
    trusting = VaultProvider.from_env({**base, "VAULT_CACERT": openbao_tls.ca_cert})
    untrusting = VaultProvider.from_env(base)
    providers += [trusting, untrusting]
    trusting.write("tls_secret", "over-tls")
    assert trusting.read("tls_secret").value == "over-tls"
    with pytest.raises(BackendError, match="VAULT_CACERT") as info:
        untrusting.read("tls_secret")
    assert not isinstance(info.value, BackendUnavailable)


def test_renewable_static_token_is_renewed_before_it_expires(
    openbao: OpenBao, vault_root: hvac.Client, providers: list[VaultProvider]
) -> None:
    def short_token() -> str:
        answer = vault_root.auth.token.create(
            policies=[APPROLE_POLICY], ttl="3s", explicit_max_ttl="1m", renewable=True
        )
        return str(answer["auth"]["client_token"])

    kept, neglected = short_token(), short_token()
    provider = _provider(openbao, new_prefix(), VAULT_TOKEN=kept)
    providers.append(provider)
    name = _name()
    provider.write(name, "v")  # first success: lookup-self learns ttl=3s, renewable
    for _ in range(2):
        time.sleep(2.2)  # past 2/3 of the TTL: the next call renews first
        assert provider.read(name).value == "v"
    with pytest.raises(hvac.exceptions.Forbidden):  # same TTL, never renewed: expired
        vault_root.auth.token.lookup(neglected)
    assert vault_root.auth.token.lookup(kept)["data"]["ttl"] > 0
