"""The aws provider as a contract-suite fixture, on a session-wide (corrected) moto server.

boto3 and moto are imported when a fixture first needs them, so the rest of the suite runs
without them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from rotation.providers.aws import AWSSecretsManagerProvider
    from tests.backends.motoserver import MotoServer

#: Shared by the tests' providers so botocore loads the service model once.
_BOTOCORE: list[Any] = []


def make_aws_provider(
    server: MotoServer, prefix: str | None = None, **options: Any
) -> AWSSecretsManagerProvider:
    """A provider on ``server`` confined to ``prefix`` (a fresh one by default)."""
    import botocore.session

    from rotation.providers.aws import AWSSecretsManagerProvider
    from tests.backends.motoserver import CREDENTIALS

    if not _BOTOCORE:
        _BOTOCORE.append(botocore.session.Session())
    options.setdefault("botocore_session", _BOTOCORE[0])
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
    pytest.importorskip("boto3")
    pytest.importorskip("moto.server")
    from tests.backends.motoserver import running_moto_server

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
