"""The aws provider against moto in server mode, plus proofs of the fixture's moto corrections.

``moto_client`` is a raw boto3 client: it reads the way ``aws secretsmanager get-secret-value``
does, so it shows what plain readers see.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError, NoCredentialsError

from rotation.client.manager import SecretsManager
from rotation.errors import (
    AuthenticationFailed,
    BackendUnavailable,
    ConfigurationError,
    InvalidSecretName,
    PermissionDenied,
    SecretNotFound,
    UnsupportedOperation,
    VersionConflict,
)
from rotation.providers.aws.provider import STRING_TAG, AWSSecretsManagerProvider
from rotation.providers.base import Capability
from rotation.values import Stage
from tests.backends.aws import make_aws_provider
from tests.backends.motoserver import MotoServer


def _name(stem: str = "s") -> str:
    return f"{stem}_{uuid.uuid4().hex[:8]}"


def _token() -> str:
    return uuid.uuid4().hex


def _code(info: pytest.ExceptionInfo[ClientError]) -> str:
    return str(info.value.response["Error"]["Code"])


def _labels(client: Any, secret_id: str, deprecated: bool = False) -> dict[str, list[str]]:
    answer = client.list_secret_version_ids(SecretId=secret_id, IncludeDeprecated=deprecated)
    return {v["VersionId"]: v["VersionStages"] for v in answer["Versions"]}


# --- the fixture's moto corrections, each proven over the wire ------------------------------


def test_correction_stage_move_moves_plain_reads(moto_client: Any) -> None:
    name = _name("fix")
    first = moto_client.create_secret(Name=name, SecretString="one")["VersionId"]
    token = _token()
    moto_client.put_secret_value(
        SecretId=name, ClientRequestToken=token, SecretString="two", VersionStages=["AWSPENDING"]
    )
    moto_client.update_secret_version_stage(
        SecretId=name, VersionStage="AWSCURRENT", MoveToVersionId=token, RemoveFromVersionId=first
    )
    assert moto_client.get_secret_value(SecretId=name)["SecretString"] == "two"

    third = moto_client.put_secret_value(SecretId=name, SecretString="three")["VersionId"]
    assert moto_client.get_secret_value(SecretId=name)["SecretString"] == "three"
    labels = _labels(moto_client, name)
    assert [v for v, s in labels.items() if "AWSCURRENT" in s] == [third]
    assert "AWSPREVIOUS" in labels[token] and "AWSCURRENT" not in labels[token]
    assert first not in labels  # no label left: deprecated


def test_correction_put_keeps_other_labels_of_old_current(moto_client: Any) -> None:
    name = _name("fix")
    token = _token()
    moto_client.create_secret(Name=name, ClientRequestToken=token, SecretString="one")
    moto_client.update_secret_version_stage(
        SecretId=name, VersionStage="custom-label", MoveToVersionId=token
    )
    moto_client.put_secret_value(SecretId=name, SecretString="two")
    assert sorted(_labels(moto_client, name)[token]) == ["AWSPREVIOUS", "custom-label"]


def test_correction_reused_token_with_other_value_is_refused(moto_client: Any) -> None:
    name = _name("fix")
    moto_client.create_secret(Name=name, SecretString="one")
    token = _token()
    pending = {"SecretId": name, "ClientRequestToken": token, "VersionStages": ["AWSPENDING"]}
    moto_client.put_secret_value(SecretString="two", **pending)
    with pytest.raises(ClientError) as info:
        moto_client.put_secret_value(SecretString="other", **pending)
    assert _code(info) == "ResourceExistsException"
    again = moto_client.put_secret_value(SecretString="two", **pending)  # same value: ignored
    assert again["VersionId"] == token
    answer = moto_client.get_secret_value(SecretId=name, VersionStage="AWSPENDING")
    assert answer["SecretString"] == "two"


def test_correction_writes_to_a_deleted_secret_are_refused(moto_client: Any) -> None:
    name = _name("fix")
    first = moto_client.create_secret(Name=name, SecretString="one")["VersionId"]
    moto_client.delete_secret(SecretId=name, RecoveryWindowInDays=7)
    with pytest.raises(ClientError) as info:
        moto_client.put_secret_value(SecretId=name, SecretString="two")
    assert _code(info) == "InvalidRequestException"
    with pytest.raises(ClientError) as info:
        moto_client.update_secret_version_stage(
            SecretId=name, VersionStage="x", MoveToVersionId=first
        )
    assert _code(info) == "InvalidRequestException"


def test_correction_deprecated_versions_and_dates(moto_client: Any) -> None:
    name = _name("fix")
    created = moto_client.create_secret(Name=name, SecretString="one")["VersionId"]
    made_before = time.time()
    old, new = _token(), _token()
    for token in (old, new):  # the second AWSPENDING takes the label from the first
        moto_client.put_secret_value(
            SecretId=name,
            ClientRequestToken=token,
            SecretString=token,
            VersionStages=["AWSPENDING"],
        )
    assert set(_labels(moto_client, name)) == {created, new}
    assert set(_labels(moto_client, name, deprecated=True)) == {created, old, new}
    assert old not in moto_client.describe_secret(SecretId=name)["VersionIdsToStages"]
    time.sleep(1.1)
    versions = moto_client.list_secret_version_ids(SecretId=name)["Versions"]
    dates = {v["VersionId"]: v["CreatedDate"].timestamp() for v in versions}
    assert dates[created] <= made_before + 0.001  # the version's own date, not "now"
    with pytest.raises(ClientError) as info:
        moto_client.list_secret_version_ids(SecretId=_name("missing"))
    assert _code(info) == "ResourceNotFoundException"


# --- stages on the wire ---------------------------------------------------------------------


def test_pending_is_invisible_to_plain_readers(
    aws_provider: AWSSecretsManagerProvider, moto_client: Any
) -> None:
    name = _name("db_password")
    full = aws_provider.prefix + name
    old = aws_provider.write(name, "old")
    token = _token()
    assert aws_provider.stage_pending(name, "new", token=token) == token
    assert moto_client.get_secret_value(SecretId=full)["SecretString"] == "old"
    pending = moto_client.get_secret_value(SecretId=full, VersionStage="AWSPENDING")
    assert pending["SecretString"] == "new" and pending["VersionId"] == token

    assert aws_provider.promote(name, token=token) == token
    assert moto_client.get_secret_value(SecretId=full)["SecretString"] == "new"
    assert _labels(moto_client, full) == {token: ["AWSCURRENT"], old: ["AWSPREVIOUS"]}


def test_stage_pending_same_token_is_idempotent(
    aws_provider: AWSSecretsManagerProvider, moto_client: Any
) -> None:
    name = _name()
    aws_provider.write(name, "old")
    token = _token()
    first = aws_provider.stage_pending(name, "new-value", token=token)
    count = len(_labels(moto_client, aws_provider.prefix + name, deprecated=True))
    assert aws_provider.stage_pending(name, "new-value", token=token) == first == token
    assert len(_labels(moto_client, aws_provider.prefix + name, deprecated=True)) == count
    with pytest.raises(VersionConflict) as info:
        aws_provider.stage_pending(name, "other-value", token=token)
    assert "other-value" not in str(info.value) and "new-value" not in str(info.value)
    assert isinstance(info.value.__cause__, ClientError)
    assert aws_provider.read(name, stage=Stage.PENDING).value == "new-value"


def test_promote_finishes_after_a_crash_between_its_two_calls(
    aws_provider: AWSSecretsManagerProvider, moto_client: Any
) -> None:
    name = _name()
    full = aws_provider.prefix + name
    old = aws_provider.write(name, "old")
    token = _token()
    aws_provider.stage_pending(name, "new", token=token)
    moto_client.update_secret_version_stage(  # first half of promote only
        SecretId=full, VersionStage="AWSCURRENT", MoveToVersionId=token, RemoveFromVersionId=old
    )
    assert sorted(_labels(moto_client, full)[token]) == ["AWSCURRENT", "AWSPENDING"]
    assert aws_provider.promote(name, token=token) == token
    assert _labels(moto_client, full)[token] == ["AWSCURRENT"]
    with pytest.raises(SecretNotFound):
        aws_provider.read(name, stage=Stage.PENDING)


def test_promote_and_rollback_edge_cases(
    aws_provider: AWSSecretsManagerProvider, moto_client: Any
) -> None:
    name = _name()
    aws_provider.write(name, "old")
    with pytest.raises(SecretNotFound, match="no version staged under token"):
        aws_provider.promote(name, token=_token())
    token = _token()
    aws_provider.stage_pending(name, "new", token=token)
    aws_provider.discard_pending(name, token=token)
    with pytest.raises(SecretNotFound):
        aws_provider.promote(name, token=token)  # a discarded version is gone for Keyturn

    lone = _name()
    first = _token()
    moto_client.create_secret(
        Name=aws_provider.prefix + lone, ClientRequestToken=first, SecretString="v"
    )
    with pytest.raises(SecretNotFound, match="no previous version"):
        aws_provider.rollback(lone, token=first)
    with pytest.raises(UnsupportedOperation, match="32-64"):
        aws_provider.stage_pending(name, "v", token="short")


def test_versions_carry_tokens_oldest_first(aws_provider: AWSSecretsManagerProvider) -> None:
    name = _name()
    first = aws_provider.write(name, "one")
    token = _token()
    aws_provider.stage_pending(name, "two", token=token)
    aws_provider.promote(name, token=token)
    infos = aws_provider.versions(name)
    assert [(v.version_id, v.stages) for v in infos] == [
        (first, {Stage.PREVIOUS}),
        (token, {Stage.CURRENT}),
    ]
    assert all(v.token == v.version_id and v.created is not None for v in infos)
    assert aws_provider.read(name).token == token


# --- values ----------------------------------------------------------------------------------


def test_value_kinds_survive_every_stage(
    aws_provider: AWSSecretsManagerProvider, moto_client: Any
) -> None:
    name = _name()
    full = aws_provider.prefix + name
    raw_id = aws_provider.write(name, '{"a": 1}')
    assert moto_client.get_secret_value(SecretId=full)["SecretString"] == '{"a": 1}'
    tags = {t["Key"] for t in moto_client.describe_secret(SecretId=full)["Tags"]}
    assert tags == {STRING_TAG + raw_id}

    aws_provider.write(name, {"user": "app", "password": "pw"})
    assert json.loads(moto_client.get_secret_value(SecretId=full)["SecretString"]) == {
        "user": "app",
        "password": "pw",
    }
    assert dict(aws_provider.read(name).value) == {"user": "app", "password": "pw"}  # type: ignore[arg-type]
    assert aws_provider.read(name, stage=Stage.PREVIOUS).value == '{"a": 1}'

    token = _token()
    aws_provider.stage_pending(name, '{"b": 2}', token=token)
    assert aws_provider.read(name, stage=Stage.PENDING).value == '{"b": 2}'
    assert aws_provider.read(name).value == {"user": "app", "password": "pw"}


def test_json_written_by_other_tools_reads_as_an_object(
    aws_provider: AWSSecretsManagerProvider, moto_client: Any
) -> None:
    name = _name("rds")
    moto_client.create_secret(
        Name=aws_provider.prefix + name, SecretString='{"username": "u", "port": 5432}'
    )
    assert aws_provider.read(name).value == {"username": "u", "port": 5432}
    moto_client.create_secret(Name=aws_provider.prefix + name + "_b", SecretString="[1, 2]")
    assert aws_provider.read(name + "_b").value == "[1, 2]"


# --- delete, restore, purge ------------------------------------------------------------------


def test_delete_with_recovery_window_then_restore(
    aws_provider: AWSSecretsManagerProvider, moto_client: Any
) -> None:
    sent: list[dict[str, Any]] = []
    aws_provider.client.meta.events.register(
        "before-parameter-build.secrets-manager.DeleteSecret",
        lambda params, **_: sent.append(dict(params)),
    )
    name = _name("old_api_key")
    aws_provider.write(name, "v1")
    aws_provider.delete(name)
    assert sent[-1]["RecoveryWindowInDays"] == 30
    assert "ForceDeleteWithoutRecovery" not in sent[-1]
    assert moto_client.describe_secret(SecretId=aws_provider.prefix + name).get("DeletedDate")

    with pytest.raises(SecretNotFound) as info:
        aws_provider.read(name)
    assert "scheduled for deletion" in str(info.value) and "restore" in str(info.value)
    for call in (
        lambda: aws_provider.versions(name),
        lambda: aws_provider.write(name, "v2"),
        lambda: aws_provider.delete(name),
    ):
        with pytest.raises(SecretNotFound, match="scheduled for deletion"):
            call()
    assert name not in aws_provider.list()

    assert Capability.RESTORE in aws_provider.capabilities
    aws_provider.restore(name)
    assert aws_provider.read(name).value == "v1"
    assert aws_provider.list() == [name]


def test_recovery_window_from_the_environment(moto_server: MotoServer) -> None:
    provider = AWSSecretsManagerProvider.from_env(
        {**_env(moto_server), "AWS_RECOVERY_WINDOW_DAYS": "7"}
    )
    try:
        assert provider.recovery_window_days == 7
    finally:
        provider.close()
    for bad in ("abc", "3", "31"):
        with pytest.raises(ConfigurationError, match="7"):
            AWSSecretsManagerProvider.from_env(
                {**_env(moto_server), "AWS_RECOVERY_WINDOW_DAYS": bad}
            )


def test_force_delete_and_purge(aws_provider: AWSSecretsManagerProvider, moto_client: Any) -> None:
    name = _name()
    aws_provider.write(name, "v")
    aws_provider.delete(name, force=True)
    with pytest.raises(ClientError) as info:
        moto_client.describe_secret(SecretId=aws_provider.prefix + name)
    assert _code(info) == "ResourceNotFoundException"
    with pytest.raises(SecretNotFound) as not_found:
        aws_provider.read(name)
    assert "scheduled" not in str(not_found.value)
    with pytest.raises(SecretNotFound):
        aws_provider.delete(name, force=True)  # AWS would say nothing; Keyturn tells

    other = _name()
    aws_provider.write(other, "v")
    with pytest.raises(SecretNotFound, match="not scheduled for deletion"):
        aws_provider.purge(other)
    aws_provider.delete(other)
    aws_provider.purge(other)
    with pytest.raises(SecretNotFound):
        aws_provider.restore(other)


# --- list ------------------------------------------------------------------------------------


def test_list_paginates_and_filters_exactly(moto_server: MotoServer, moto_client: Any) -> None:
    prefix = f"kt_{uuid.uuid4().hex[:10]}/"
    provider = make_aws_provider(moto_server, prefix=prefix, page_size=25)
    pages: list[str] = []
    provider.client.meta.events.register(
        "before-call.secrets-manager.ListSecrets", lambda **_: pages.append("page")
    )
    try:
        names = [f"app/key_{i:03d}" for i in range(120)]
        for name in names:
            moto_client.create_secret(Name=prefix + name, SecretString="v")
        moto_client.create_secret(Name=prefix.rstrip("/") + "_sibling", SecretString="v")
        moto_client.create_secret(Name=prefix + "odd+name", SecretString="v")  # not Keyturn's
        moto_client.create_secret(Name=prefix + "gone", SecretString="v")
        moto_client.delete_secret(SecretId=prefix + "gone", RecoveryWindowInDays=7)

        assert provider.list() == sorted(names)
        assert len(pages) >= 5  # 120 names, 25 per page
        assert provider.list("app/key_11") == [f"app/key_11{i}" for i in range(10)]
        assert provider.list("nothing") == []
        with pytest.raises(InvalidSecretName):
            provider.list("../")
    finally:
        provider.close()


# --- configuration, credentials, errors -----------------------------------------------------

_CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
)


def _env(server: MotoServer, **extra: str) -> dict[str, str]:
    return {
        "AWS_REGION": server.region,
        "AWS_ENDPOINT_URL": server.endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECRETS_PREFIX": f"kt_{uuid.uuid4().hex[:10]}/",
        **extra,
    }


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[dict[str, str]]:
    """A process with no AWS credentials anywhere (and no metadata service to ask)."""
    for variable in _CREDENTIAL_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    missing = {
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for variable, value in missing.items():
        monkeypatch.setenv(variable, value)
    yield missing


def test_missing_credentials_say_what_to_configure(
    moto_server: MotoServer, no_credentials: dict[str, str]
) -> None:
    env = {
        "AWS_REGION": moto_server.region,
        "AWS_ENDPOINT_URL": moto_server.endpoint_url,
        **no_credentials,
    }
    provider = AWSSecretsManagerProvider.from_env(env)
    started = time.monotonic()
    try:
        with pytest.raises(AuthenticationFailed) as info:
            provider.read("db_password")
    finally:
        provider.close()
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert message.startswith("AWS credentials not found")
    for hint in ("aws configure", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "IAM role"):
        assert hint in message
    assert isinstance(info.value.__cause__, NoCredentialsError)


def test_configuration_errors(
    monkeypatch: pytest.MonkeyPatch, no_credentials: dict[str, str]
) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with pytest.raises(ConfigurationError, match="AWS_REGION"):
        AWSSecretsManagerProvider.from_env(dict(no_credentials))
    region = {"AWS_REGION": "us-east-1"}
    with pytest.raises(InvalidSecretName):
        AWSSecretsManagerProvider.from_env({**region, "AWS_SECRETS_PREFIX": "../"})
    with pytest.raises(ConfigurationError, match="profile"):
        AWSSecretsManagerProvider.from_env({**no_credentials, **region, "AWS_PROFILE": "nope"})
    with pytest.raises(ConfigurationError, match="endpoint"):
        AWSSecretsManagerProvider.from_env({**region, "AWS_ENDPOINT_URL": "not a url"})
    with pytest.raises(ConfigurationError, match="AWS_MAX_ATTEMPTS"):
        AWSSecretsManagerProvider.from_env({**region, "AWS_MAX_ATTEMPTS": "0"})
    provider = AWSSecretsManagerProvider.from_env({**region, "AWS_MAX_ATTEMPTS": "2"})
    try:
        assert provider.client.meta.config.retries["total_max_attempts"] == 2
    finally:
        provider.close()


def test_one_configured_client_per_provider(aws_provider: AWSSecretsManagerProvider) -> None:
    client = aws_provider.client
    config = client.meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 5}
    assert (config.connect_timeout, config.read_timeout) == (5.0, 15.0)
    assert config.max_pool_connections == 20
    name = _name()
    aws_provider.write(name, "v")
    aws_provider.read(name)
    assert aws_provider.client is client


def test_secrets_manager_from_env_end_to_end(moto_server: MotoServer, moto_client: Any) -> None:
    env = _env(moto_server, SECRETS_PROVIDER="aws", SECRETS_CACHE_TTL="0")
    manager = SecretsManager.from_env(env)
    try:
        assert isinstance(manager.provider, AWSSecretsManagerProvider)
        manager.set("ncbi_api_key", "first")
        full = env["AWS_SECRETS_PREFIX"] + "ncbi_api_key"
        assert moto_client.get_secret_value(SecretId=full)["SecretString"] == "first"
        assert manager.get("ncbi_api_key") == "first"
        manager.set("db", {"username": "app", "password": "pw"})

        rotated = manager.rotate("ncbi_api_key")
        assert rotated != "first"
        assert manager.get("ncbi_api_key") == rotated
        assert moto_client.get_secret_value(SecretId=full)["SecretString"] == rotated
        new_db = manager.rotate("db")
        assert isinstance(new_db, dict) and new_db["password"] != "pw"
        assert manager.get("db") == new_db

        stages = [v.stages for v in manager.versions("ncbi_api_key")]
        assert stages == [{Stage.PREVIOUS}, {Stage.CURRENT}]
        assert manager.list() == ["db", "ncbi_api_key"]

        manager.delete("ncbi_api_key")
        with pytest.raises(SecretNotFound, match="scheduled for deletion"):
            manager.get("ncbi_api_key")
        assert manager.list() == ["db"]
    finally:
        manager.close()


# --- retries and error translation, with answers injected before the HTTP send --------------


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


def _inject(
    provider: AWSSecretsManagerProvider, operation: str, code: str, *, times: int, status: int = 400
) -> list[int]:
    """Answer the next ``times`` attempts of ``operation`` with error ``code``; count attempts."""
    attempts: list[int] = []

    def answer(**_: Any) -> AWSResponse | None:
        attempts.append(1)
        if len(attempts) > times:
            return None  # go to the server
        body = json.dumps({"__type": code, "message": "injected by the test"}).encode()
        headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": code}
        return AWSResponse("http://injected", status, headers, _Body(body))

    provider.client.meta.events.register(f"before-send.secrets-manager.{operation}", answer)
    return attempts


def test_throttling_is_retried(aws_provider: AWSSecretsManagerProvider) -> None:
    name = _name()
    aws_provider.write(name, "v")
    attempts = _inject(aws_provider, "GetSecretValue", "ThrottlingException", times=1)
    assert aws_provider.read(name).value == "v"
    assert len(attempts) == 2


def test_persistent_throttling_ends_in_backend_unavailable(moto_server: MotoServer) -> None:
    provider = make_aws_provider(moto_server, max_retries=2)
    attempts = _inject(provider, "GetSecretValue", "ThrottlingException", times=100)
    started = time.monotonic()
    try:
        with pytest.raises(BackendUnavailable, match="ThrottlingException") as info:
            provider.read("anything")
    finally:
        provider.close()
    assert len(attempts) == 3  # the first try and two retries, with backoff
    assert time.monotonic() - started < 5
    assert isinstance(info.value.__cause__, ClientError)


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("AccessDeniedException", 400, PermissionDenied),
        ("UnrecognizedClientException", 400, AuthenticationFailed),
        ("InvalidSignatureException", 400, AuthenticationFailed),
        ("ExpiredTokenException", 400, AuthenticationFailed),
        ("InternalServiceError", 500, BackendUnavailable),
    ],
)
def test_backend_errors_are_translated(
    moto_server: MotoServer, code: str, status: int, expected: type[Exception]
) -> None:
    provider = make_aws_provider(moto_server, max_retries=0)
    _inject(provider, "GetSecretValue", code, times=1, status=status)
    try:
        with pytest.raises(expected) as info:
            provider.read("db_password")
    finally:
        provider.close()
    assert isinstance(info.value.__cause__, ClientError)
    if expected is PermissionDenied:
        assert "secretsmanager:GetSecretValue" in str(info.value)


def test_unreachable_endpoint_is_backend_unavailable(moto_server: MotoServer) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = AWSSecretsManagerProvider(
        region=moto_server.region,
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        max_retries=0,
    )
    try:
        with pytest.raises(BackendUnavailable, match="AWS_ENDPOINT_URL"):
            provider.read("db_password")
    finally:
        provider.close()


def test_no_value_in_any_error(aws_provider: AWSSecretsManagerProvider) -> None:
    name = _name()
    aws_provider.write(name, "s3cr3t-value")
    token = _token()
    aws_provider.stage_pending(name, "s3cr3t-next", token=token)
    errors: list[BaseException] = []
    for call in (
        lambda: aws_provider.stage_pending(name, "s3cr3t-other", token=token),
        lambda: aws_provider.write(name, "x", expected_version="nope"),
        lambda: aws_provider.read(name + "_missing"),
    ):
        try:
            call()
        except Exception as exc:
            errors.append(exc)
    assert len(errors) == 3
    assert not any("s3cr3t" in str(e) for e in errors)
    assert os.environ.get("AWS_ACCESS_KEY_ID") != "testing"  # fixtures keep credentials local


def test_a_json_read_costs_one_request_once_its_kind_is_known(
    aws_provider: AWSSecretsManagerProvider,
) -> None:
    name = f"json_{uuid.uuid4().hex[:8]}"
    aws_provider.write(name, {"username": "app", "password": "pw"})
    aws_provider.write(f"{name}_s", '{"looks": "like json"}')
    sent: list[str] = []

    def count(params: dict[str, Any], model: Any, **kwargs: Any) -> None:
        sent.append(model.name)

    aws_provider.client.meta.events.register("before-call.secrets-manager", count)
    for _ in range(3):
        assert dict(aws_provider.read(name).value) == {"username": "app", "password": "pw"}
        assert aws_provider.read(f"{name}_s").value == '{"looks": "like json"}'
    assert sent.count("GetSecretValue") == 6
    assert sent.count("DescribeSecret") == 2  # once per version, then remembered
