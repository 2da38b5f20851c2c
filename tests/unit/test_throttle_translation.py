"""Every backend's throttling answer becomes ``Throttled`` at its boundary (the engine waits on
it instead of spending an attempt), and the quota settings are parsed in one place."""

from __future__ import annotations

from typing import Any

import hvac.exceptions as hv
import pytest
from azure.core.exceptions import HttpResponseError
from botocore.exceptions import ClientError

from rotation.config import DEFAULT_QUOTAS, EngineSettings, Quota, backend_quota
from rotation.errors import BackendUnavailable, ConfigurationError, Throttled
from rotation.providers.aws.errors import translated as aws_translated
from rotation.providers.azure.errors import translated as azure_translated
from rotation.providers.vault.auth import translate as vault_translate


def _aws_error(code: str, status: int) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": "Rate exceeded"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "PutSecretValue")


@pytest.mark.parametrize(
    ("code", "status"),
    [("ThrottlingException", 400), ("TooManyRequestsException", 400), ("SlowDown", 429)],
)
def test_aws_throttling_is_throttled(code: str, status: int) -> None:
    with pytest.raises(Throttled, match="throttling"):
        with aws_translated("db/app", prefix="", region="eu-west-1"):
            raise _aws_error(code, status)


def test_aws_unavailable_is_not_throttled() -> None:
    with pytest.raises(BackendUnavailable) as caught:
        with aws_translated("db/app", prefix="", region="eu-west-1"):
            raise _aws_error("ServiceUnavailable", 503)
    assert not isinstance(caught.value, Throttled)


class _Response:
    """What azure-core's HttpResponseError reads from a response."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status_code = status
        self.headers = headers
        self.reason = "Too Many Requests"
        self.request = None

    def text(self, encoding: str | None = None) -> str:
        return '{"error": {"code": "Throttled", "message": "Too many requests"}}'

    def body(self) -> bytes:
        return self.text().encode()


def test_azure_429_is_throttled_with_its_retry_after() -> None:
    with pytest.raises(Throttled) as caught:
        with azure_translated("db-app", vault_url="https://v.vault.azure.net", retries=3):
            raise HttpResponseError(response=_Response(429, {"Retry-After": "7"}))
    assert caught.value.retry_after == 7.0
    assert "throttling" in str(caught.value)


def test_vault_429_is_throttled() -> None:
    error = vault_translate(
        hv.RateLimitExceeded("request path: rate limit quota exceeded"), "http://v:8200", "x"
    )
    assert isinstance(error, Throttled)


def test_quotas_and_the_throttle_bound_are_settings() -> None:
    assert backend_quota("aws", {}) == DEFAULT_QUOTAS["aws"]
    assert backend_quota("local", {}).unlimited
    assert not backend_quota("local", {"KEYTURN_RATE_LOCAL_WRITE": "5"}).unlimited
    assert backend_quota("aws", {"KEYTURN_CONCURRENCY_AWS": "0"}) == Quota(
        read=10_000, write=50, list=50, concurrency=0
    )
    with pytest.raises(ConfigurationError, match="KEYTURN_CONCURRENCY_AWS"):
        backend_quota("aws", {"KEYTURN_CONCURRENCY_AWS": "-1"})
    assert EngineSettings.from_env({}).throttled_max.total_seconds() == 3600
    settings = EngineSettings.from_env({"KEYTURN_THROTTLED_MAX_SECONDS": "600"})
    assert settings.throttled_max.total_seconds() == 600
    with pytest.raises(ConfigurationError, match="KEYTURN_THROTTLED_MAX_SECONDS"):
        EngineSettings.from_env({"KEYTURN_THROTTLED_MAX_SECONDS": "soon"})
