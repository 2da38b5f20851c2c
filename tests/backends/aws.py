"""The aws provider as a contract-suite fixture, on a session-wide (corrected) moto server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import botocore.session
import pytest

from rotation.providers.aws import AWSSecretsManagerProvider
from tests.backends.motoserver import CREDENTIALS, MotoServer, running_moto_server

#: Shared by the tests' providers so botocore loads the service model once.
_BOTOCORE = botocore.session.Session()


def make_aws_provider(
    server: MotoServer, prefix: str | None = None, **options: Any
) -> AWSSecretsManagerProvider:
    """A provider on ``server`` confined to ``prefix`` (a fresh one by default)."""
    options.setdefault("botocore_session", _BOTOCORE)
    return AWSSecretsManagerProvider(
        region=server.region,
        endpoint_url=server.endpoint_url,
        prefix=prefix if prefix is not None else f"kt_{uuid.uuid4().hex[:10]}/",
        **CREDENTIALS,
        **options,
    )


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """moto in server mode over HTTP, started once per session and stopped at its end."""
    with running_moto_server() as server:
        yield server


@pytest.fixture
def moto_client(moto_server: MotoServer) -> Iterator[Any]:
    """A raw boto3 client on the moto server, as `aws secretsmanager` would use it."""
    client = moto_server.client()
    yield client
    client.close()


@pytest.fixture
def aws_provider(moto_server: MotoServer) -> Iterator[AWSSecretsManagerProvider]:
    """A provider under a unique ``AWS_SECRETS_PREFIX``, so every test starts empty."""
    provider = make_aws_provider(moto_server)
    yield provider
    provider.close()
