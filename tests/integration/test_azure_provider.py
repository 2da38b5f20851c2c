"""The azure provider against the HTTPS Key Vault emulator, through the official SDK.

What the contract suite cannot see: the challenge flow, what a plain SDK reader gets, crash
recovery, soft delete, name mapping, configuration, retries under injected faults.
"""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity import ClientSecretCredential, DefaultAzureCredential
from azure.keyvault.secrets import SecretClient

from rotation.client.manager import SecretsManager
from rotation.errors import (
    AuthenticationFailed,
    BackendUnavailable,
    ConfigurationError,
    PermissionDenied,
    SecretNotFound,
    VersionConflict,
)
from rotation.providers.azure.provider import AzureKeyVaultProvider, StaticTokenCredential
from rotation.providers.base import Capability
from rotation.values import Stage
from tests.backends.azure import KEYVAULT_TOKEN, make_azure_provider, unique_prefix
from tests.backends.keyvault import KeyVaultEmulator


def _name(stem: str = "s") -> str:
    return f"{stem}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def sdk(keyvault_emulator: KeyVaultEmulator) -> Iterator[SecretClient]:
    """A plain SDK client, as `az keyvault secret show` or another application would read."""
    client = SecretClient(
        keyvault_emulator.url,
        StaticTokenCredential(KEYVAULT_TOKEN),
        verify_challenge_resource=False,
        connection_verify=keyvault_emulator.ca_bundle,
    )
    with client:
        yield client


@pytest.fixture
def fresh_emulator(keyvault_emulator: KeyVaultEmulator, tmp_path) -> Iterator[KeyVaultEmulator]:
    """A second emulator on a new port, unknown to the SDK's process-wide challenge cache."""
    with KeyVaultEmulator(
        tokens={KEYVAULT_TOKEN}, tls_dir=tmp_path, tls=keyvault_emulator.tls
    ) as emulator:
        yield emulator


# --- authentication -----------------------------------------------------------------------------


def test_challenge_flow_first_request_is_refused_then_authorized(fresh_emulator) -> None:
    provider = make_azure_provider(fresh_emulator)
    try:
        name = _name()
        provider.write(name, "v1")
        assert provider.read(name).value == "v1"
    finally:
        provider.close()
    first, second, *rest = list(fresh_emulator.requests)
    assert (first.method, first.status, first.authorized) == ("GET", 401, False)
    assert (second.method, second.status, second.authorized) == ("GET", 404, True)
    put = next(r for r in rest if r.method == "PUT")
    assert put.authorized and put.status == 200 and put.body_bytes > 0
    assert all(r.authorized for r in rest)  # the challenge is answered once, then cached
    assert all(r.api_version for r in fresh_emulator.requests)


def test_challenge_request_carries_no_body(fresh_emulator) -> None:
    client = SecretClient(
        fresh_emulator.url,
        StaticTokenCredential(KEYVAULT_TOKEN),
        verify_challenge_resource=False,
        connection_verify=fresh_emulator.ca_bundle,
    )
    with client:
        client.set_secret("first-request-is-a-put", "v")
    puts = [(r.status, r.authorized, r.body_bytes > 0) for r in fresh_emulator.requests]
    assert puts == [(401, False, False), (200, True, True)]


def test_wrong_token_is_authentication_failed(keyvault_emulator) -> None:
    before = keyvault_emulator.stats["refused_tokens"]
    provider = make_azure_provider(keyvault_emulator, token="not-a-valid-token")
    try:
        with pytest.raises(AuthenticationFailed) as info:
            provider.read(_name())
    finally:
        provider.close()
    assert "401" in str(info.value)
    assert "not-a-valid-token" not in str(info.value)
    assert keyvault_emulator.stats["refused_tokens"] > before


def test_challenge_resource_is_verified_unless_disabled(keyvault_emulator) -> None:
    provider = AzureKeyVaultProvider(
        keyvault_emulator.url,
        credential=StaticTokenCredential(KEYVAULT_TOKEN),
        verify_challenge_resource=True,
        ca_bundle=keyvault_emulator.ca_bundle,
    )
    try:
        with pytest.raises(ConfigurationError, match="AZURE_KEY_VAULT_VERIFY_CHALLENGE_RESOURCE"):
            provider.read(_name())
    finally:
        provider.close()


# --- stages as plain readers see them -----------------------------------------------------------


def test_pending_is_invisible_to_a_plain_sdk_reader(azure_provider, sdk) -> None:
    name = _name("db_password")
    azure_name = azure_provider.names.to_azure(name)
    old_id = azure_provider.write(name, "old-value")
    token = uuid.uuid4().hex
    pending_id = azure_provider.stage_pending(name, "new-value", token=token)
    plain = sdk.get_secret(azure_name)
    assert plain.value == "old-value"
    assert plain.properties.version == old_id
    assert [v.version for v in sdk.list_properties_of_secret_versions(azure_name)] == [old_id]
    assert name in azure_provider.list() and len(azure_provider.list()) == 1  # sibling hidden
    infos = {v.version_id: v for v in azure_provider.versions(name)}
    assert infos[pending_id].stages == {Stage.PENDING} and infos[pending_id].token == token

    new_id = azure_provider.promote(name, token=token)
    plain = sdk.get_secret(azure_name)
    assert (plain.value, plain.properties.version) == ("new-value", new_id)
    assert plain.properties.tags["keyturn-token"] == token
    assert plain.properties.tags["keyturn-previous"] == old_id
    # The consumed pending copy is disabled: not even the SDK can read it any more.
    with pytest.raises(HttpResponseError) as info:
        sdk.get_secret(azure_provider.names.pending_of(name))
    assert info.value.status_code == 403


def test_promote_is_idempotent_after_a_crash_between_its_steps(
    azure_provider, keyvault_emulator, sdk
) -> None:
    name = _name()
    azure_name = azure_provider.names.to_azure(name)
    azure_provider.write(name, "old")
    token = uuid.uuid4().hex
    azure_provider.stage_pending(name, "new", token=token)
    # The crash: the new version is written, the connection dies before the sibling is retired.
    keyvault_emulator.faults(drop_rate=1.0, methods=("PATCH",))
    with pytest.raises(BackendUnavailable):
        azure_provider.promote(name, token=token)
    keyvault_emulator.faults()
    assert sdk.get_secret(azure_name).value == "new"
    assert azure_provider.read(name, stage=Stage.PENDING).value == "new"  # not yet retired

    current_id = azure_provider.promote(name, token=token)
    assert azure_provider.promote(name, token=token) == current_id
    versions = list(sdk.list_properties_of_secret_versions(azure_name))
    assert len(versions) == 2  # old + exactly one promoted version
    assert sdk.get_secret(azure_name).properties.version == current_id
    with pytest.raises(SecretNotFound):
        azure_provider.read(name, stage=Stage.PENDING)
    assert azure_provider.read(name, stage=Stage.PREVIOUS).value == "old"


def test_promote_after_a_crash_before_writing_creates_one_version(
    keyvault_emulator, sdk, request
) -> None:
    azure_provider = make_azure_provider(keyvault_emulator, retry_total=0)
    request.addfinalizer(azure_provider.close)
    request.addfinalizer(keyvault_emulator.faults)
    name = _name()
    azure_provider.write(name, "old")
    token = uuid.uuid4().hex
    azure_provider.stage_pending(name, "new", token=token)
    keyvault_emulator.faults(drop_rate=1.0, methods=("PUT",))
    with pytest.raises(BackendUnavailable):
        azure_provider.promote(name, token=token)
    keyvault_emulator.faults()
    assert azure_provider.read(name).value == "old"
    azure_provider.promote(name, token=token)
    azure_name = azure_provider.names.to_azure(name)
    assert len(list(sdk.list_properties_of_secret_versions(azure_name))) == 2


def test_rollback_writes_previous_again_once(azure_provider, sdk) -> None:
    name = _name()
    first = azure_provider.write(name, {"user": "app", "password": "one"})
    token = uuid.uuid4().hex
    azure_provider.stage_pending(name, {"user": "app", "password": "two"}, token=token)
    promoted = azure_provider.promote(name, token=token)
    restored = azure_provider.rollback(name, token=token)
    assert azure_provider.rollback(name, token=token) == restored
    assert dict(azure_provider.read(name).value) == {"user": "app", "password": "one"}
    stages = {v.version_id: v.stages for v in azure_provider.versions(name)}
    assert stages == {first: frozenset(), promoted: {Stage.PREVIOUS}, restored: {Stage.CURRENT}}
    tags = sdk.get_secret(azure_provider.names.to_azure(name)).properties.tags
    assert tags["keyturn-rollback-of"] == token


def test_previous_falls_back_to_creation_order_for_foreign_writes(azure_provider, sdk) -> None:
    name = _name()
    azure_name = azure_provider.names.to_azure(name)
    sdk.set_secret(azure_name, "written-by-az-cli")
    time.sleep(1.05)  # Key Vault timestamps have one-second resolution
    sdk.set_secret(azure_name, "also-az-cli")
    assert azure_provider.read(name).value == "also-az-cli"
    assert azure_provider.read(name, stage=Stage.PREVIOUS).value == "written-by-az-cli"


def test_values_keep_their_type_through_content_type(azure_provider, sdk) -> None:
    obj, text = _name("obj"), _name("txt")
    azure_provider.write(obj, {"a": 1})
    azure_provider.write(text, '{"a": 1}')
    assert sdk.get_secret(azure_provider.names.to_azure(obj)).properties.content_type == (
        "application/json"
    )
    assert sdk.get_secret(azure_provider.names.to_azure(text)).properties.content_type == (
        "text/plain"
    )
    assert azure_provider.read(text).value == '{"a": 1}'
    assert dict(azure_provider.read(obj).value) == {"a": 1}


# --- soft delete --------------------------------------------------------------------------------


def test_soft_delete_then_recover_brings_the_value_back(azure_provider, sdk) -> None:
    assert {Capability.RESTORE, Capability.PURGE} <= azure_provider.capabilities
    name = _name()
    azure_provider.write(name, "one")
    azure_provider.write(name, "two")
    azure_provider.delete(name)
    assert name not in azure_provider.list()
    with pytest.raises(SecretNotFound):
        azure_provider.read(name)
    assert sdk.get_deleted_secret(azure_provider.names.to_azure(name)).recovery_id
    azure_provider.recover(name)
    assert azure_provider.read(name).value == "two"
    assert azure_provider.read(name, stage=Stage.PREVIOUS).value == "one"
    assert name in azure_provider.list()


def test_delete_then_purge_frees_the_name(azure_provider) -> None:
    name = _name()
    azure_provider.write(name, "old")
    token = uuid.uuid4().hex
    azure_provider.stage_pending(name, "pending", token=token)
    azure_provider.delete(name)
    azure_provider.purge(name)
    new_id = azure_provider.write(name, "reborn")
    assert azure_provider.read(name).value == "reborn"
    assert [v.version_id for v in azure_provider.versions(name)] == [new_id]
    with pytest.raises(SecretNotFound):  # the old pending value was purged with it
        azure_provider.read(name, stage=Stage.PENDING)


def test_writing_a_deleted_but_not_purged_name_says_what_to_do(azure_provider) -> None:
    name = _name()
    azure_provider.write(name, "v")
    azure_provider.delete(name)
    with pytest.raises(VersionConflict) as info:
        azure_provider.write(name, "again")
    message = str(info.value)
    assert name in message and "deleted" in message
    assert "recover" in message and "purge" in message


def test_purge_of_a_live_secret_is_refused(azure_provider) -> None:
    name = _name()
    azure_provider.write(name, "v")
    with pytest.raises(SecretNotFound, match="delete it first"):
        azure_provider.purge(name)
    assert azure_provider.read(name).value == "v"


def test_delete_waits_for_a_slow_deletion_before_purging(azure_provider, keyvault_emulator) -> None:
    name = _name()
    azure_provider.write(name, "v")
    keyvault_emulator.vault.delete_delay = 0.5  # GET /deletedsecrets/{name} answers 404 meanwhile
    azure_provider.delete(name, force=True)
    assert name not in azure_provider.list()
    azure_provider.write(name, "fresh")  # purged: the name is free at once
    assert azure_provider.read(name).value == "fresh"


# --- names --------------------------------------------------------------------------------------


def test_names_with_any_allowed_character_round_trip_through_list(azure_provider, sdk) -> None:
    names = ["App/DB_Password.v2", "app/db_password.v2", "svc.api-key", "_private/X", "UPPER"]
    for i, name in enumerate(names):
        azure_provider.write(name, f"value-{i}")
    assert azure_provider.list() == sorted(names)
    assert azure_provider.list(prefix="app/") == ["app/db_password.v2"]
    for i, name in enumerate(names):
        assert azure_provider.read(name).value == f"value-{i}"
    mapped = {p.name for p in sdk.list_properties_of_secrets()}
    assert azure_provider.names.to_azure("App/DB_Password.v2") in mapped


def test_list_follows_every_page(azure_provider) -> None:
    names = [f"k{i:02d}" for i in range(30)]  # the emulator pages by 25, as Key Vault does
    for name in names:
        azure_provider.write(name, "v")
    assert azure_provider.list() == names


def test_foreign_secrets_outside_the_prefix_are_not_listed(azure_provider, sdk) -> None:
    sdk.set_secret(azure_provider.names.prefix + "bad-", "v")  # not a mapped name
    sdk.set_secret(unique_prefix() + "other", "v")  # another namespace
    azure_provider.write("mine", "v")
    assert azure_provider.list() == ["mine"]


def test_disabled_secret_is_permission_denied(azure_provider, sdk) -> None:
    name = _name()
    azure_provider.write(name, "v")
    sdk.update_secret_properties(azure_provider.names.to_azure(name), enabled=False)
    with pytest.raises(PermissionDenied, match="disabled"):
        azure_provider.read(name)


# --- faults -------------------------------------------------------------------------------------


def test_reads_survive_30_percent_503s(azure_provider, keyvault_emulator) -> None:
    name = _name()
    azure_provider.write(name, "steady")
    keyvault_emulator.faults(error_rate=0.3, status=503, seed=7)
    before = keyvault_emulator.stats["faulted"]
    for _ in range(20):
        assert azure_provider.read(name).value == "steady"
    assert keyvault_emulator.stats["faulted"] - before >= 3


def test_reads_survive_dropped_connections(azure_provider, keyvault_emulator) -> None:
    name = _name()
    azure_provider.write(name, "steady")
    keyvault_emulator.faults(drop_rate=0.3, seed=3)
    for _ in range(10):
        assert azure_provider.read(name).value == "steady"
    assert keyvault_emulator.stats["dropped"] > 0


def test_a_dead_vault_is_backend_unavailable_within_a_bounded_time(
    azure_provider, keyvault_emulator
) -> None:
    name = _name()
    azure_provider.write(name, "v")
    keyvault_emulator.faults(error_rate=1.0, status=503)
    before = keyvault_emulator.stats["faulted"]
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="503"):
        azure_provider.read(name)
    elapsed = time.monotonic() - started
    assert elapsed < 15
    assert keyvault_emulator.stats["faulted"] - before == 6  # the first try + 5 retries


def test_a_hanging_vault_times_out(keyvault_emulator) -> None:
    provider = make_azure_provider(keyvault_emulator, retry_total=1, read_timeout=0.3)
    try:
        name = _name()
        provider.write(name, "v")
        keyvault_emulator.faults(latency=1.0)
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="did not answer"):
            provider.read(name)
        assert time.monotonic() - started < 3
    finally:
        keyvault_emulator.faults()
        provider.close()


def test_throttling_honours_retry_after(keyvault_emulator) -> None:
    provider = make_azure_provider(keyvault_emulator, retry_total=2)
    try:
        name = _name()
        provider.write(name, "v")
        keyvault_emulator.faults(error_rate=1.0, status=429, retry_after=1)
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="429"):
            provider.read(name)
        assert time.monotonic() - started >= 1.9  # two Retry-After: 1 waits
    finally:
        keyvault_emulator.faults()
        provider.close()


# --- configuration and the manager --------------------------------------------------------------


def _env(emulator: KeyVaultEmulator, **extra: str) -> dict[str, str]:
    return {
        "AZURE_KEY_VAULT_URL": emulator.url,
        "AZURE_KEY_VAULT_TOKEN": KEYVAULT_TOKEN,
        "AZURE_CA_BUNDLE": emulator.ca_bundle,
        "AZURE_SECRETS_PREFIX": unique_prefix(),
        **extra,
    }


def test_secrets_manager_from_env_end_to_end(keyvault_emulator, sdk) -> None:
    env = _env(keyvault_emulator, SECRETS_PROVIDER="azure", SECRETS_CACHE_TTL="0")
    manager = SecretsManager.from_env(env)
    try:
        assert isinstance(manager.provider, AzureKeyVaultProvider)
        assert manager.provider.verify_challenge_resource is False  # 127.0.0.1 is not Azure
        manager.set("api_key_ncbi", "first")
        manager.set("db/creds", {"username": "app", "password": "pw"})
        assert manager.get("api_key_ncbi") == "first"
        rotated = manager.rotate("db/creds")
        assert dict(manager.get("db/creds")) == dict(rotated)
        assert rotated["password"] != "pw"
        assert manager.list() == ["api_key_ncbi", "db/creds"]
        assert len(manager.versions("db/creds")) == 2
        manager.delete("api_key_ncbi")
        assert manager.list() == ["db/creds"]
        mapped = manager.provider.names.to_azure("db/creds")
        assert sdk.get_secret(mapped).properties.tags["keyturn-origin"] == "promote"
    finally:
        manager.close()


def test_from_env_needs_an_https_url(keyvault_emulator) -> None:
    with pytest.raises(ConfigurationError, match="AZURE_KEY_VAULT_URL is not set"):
        AzureKeyVaultProvider.from_env({})
    http = keyvault_emulator.url.replace("https://", "http://")
    with pytest.raises(ConfigurationError, match="https"):
        AzureKeyVaultProvider.from_env(_env(keyvault_emulator, AZURE_KEY_VAULT_URL=http))


def test_from_env_rejects_a_missing_ca_bundle_and_bad_flags(keyvault_emulator, tmp_path) -> None:
    with pytest.raises(ConfigurationError, match="CA bundle"):
        AzureKeyVaultProvider.from_env(
            _env(keyvault_emulator, AZURE_CA_BUNDLE=str(tmp_path / "missing.pem"))
        )
    with pytest.raises(ConfigurationError, match="true or false"):
        AzureKeyVaultProvider.from_env(
            _env(keyvault_emulator, AZURE_KEY_VAULT_VERIFY_CHALLENGE_RESOURCE="maybe")
        )
    with pytest.raises(ConfigurationError, match="AZURE_SECRETS_PREFIX"):
        AzureKeyVaultProvider.from_env(_env(keyvault_emulator, AZURE_SECRETS_PREFIX="a_b"))


def test_from_env_picks_the_credential() -> None:
    base = {"AZURE_KEY_VAULT_URL": "https://my-vault.vault.azure.net/"}
    service_principal = {
        **base,
        "AZURE_TENANT_ID": "tenant",
        "AZURE_CLIENT_ID": "client",
        "AZURE_CLIENT_SECRET": "secret",
    }
    provider = AzureKeyVaultProvider.from_env(service_principal)
    try:
        assert isinstance(provider._credential, ClientSecretCredential)
        assert provider.verify_challenge_resource is True
        assert provider.vault_url == "https://my-vault.vault.azure.net"
    finally:
        provider.close()
    provider = AzureKeyVaultProvider.from_env(base)
    try:
        assert isinstance(provider._credential, DefaultAzureCredential)
    finally:
        provider.close()
    with pytest.raises(ConfigurationError, match="all three"):
        AzureKeyVaultProvider.from_env({**base, "AZURE_CLIENT_SECRET": "secret"})


def test_requests_use_the_ca_bundle(keyvault_emulator) -> None:
    # Without the emulator's CA the TLS handshake fails: the bundle is really in use.
    provider = AzureKeyVaultProvider(
        keyvault_emulator.url,
        credential=StaticTokenCredential(KEYVAULT_TOKEN),
        verify_challenge_resource=False,
        retry_total=0,
    )
    try:
        with pytest.raises(ConfigurationError, match="AZURE_CA_BUNDLE"):
            provider.read(_name())
    finally:
        provider.close()


# --- emulator fidelity ----------------------------------------------------------------------------


def _raw(emulator: KeyVaultEmulator, path: str, method: str = "GET") -> tuple[int, str]:
    context = ssl.create_default_context(cafile=emulator.ca_bundle)
    request = urllib.request.Request(
        emulator.url + path, method=method, headers={"Authorization": f"Bearer {KEYVAULT_TOKEN}"}
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def test_emulator_requires_api_version_and_valid_names(keyvault_emulator) -> None:
    status, body = _raw(keyvault_emulator, "/secrets")
    assert status == 400 and "api-version" in body
    status, body = _raw(keyvault_emulator, "/secrets/bad_name/?api-version=2026-04-01")
    assert status == 400 and "BadParameter" in body
    status, body = _raw(keyvault_emulator, "/secrets/nothing-here/?api-version=2026-04-01")
    assert status == 404 and '"SecretNotFound"' in body


def test_emulator_names_are_case_insensitive(sdk) -> None:
    name = f"Case{uuid.uuid4().hex[:8]}"
    created = sdk.set_secret(name, "v")
    fetched = sdk.get_secret(name.lower())
    assert fetched.value == "v" and fetched.properties.version == created.properties.version
    assert len(fetched.properties.version or "") == 32
