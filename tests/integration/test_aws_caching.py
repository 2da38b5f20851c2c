"""What docs/backends/aws.md says of caching clients: aws-secretsmanager-caching serves a value
for its refresh interval (1 hour by default), so after a rotation it returns the old value until
then, unless the application refreshes it itself (from ``on_rotate``)."""

from __future__ import annotations

import time
import uuid

from aws_secretsmanager_caching import SecretCache, SecretCacheConfig

from tests.backends.aws import make_aws_provider


def test_a_caching_client_sees_a_rotation_after_its_refresh_interval_or_a_refresh(
    moto_server,
) -> None:
    assert SecretCacheConfig().secret_refresh_interval == 3600  # the library's default
    prefix = f"kt_cache_{uuid.uuid4().hex[:8]}/"
    provider = make_aws_provider(moto_server, prefix=prefix)
    client = moto_server.client()
    try:
        provider.write("svc/api_key", "value-before-rotation-0001")
        cache = SecretCache(config=SecretCacheConfig(), client=client)
        short = SecretCache(config=SecretCacheConfig(secret_refresh_interval=1), client=client)
        secret_id = f"{prefix}svc/api_key"
        assert cache.get_secret_string(secret_id) == "value-before-rotation-0001"
        assert short.get_secret_string(secret_id) == "value-before-rotation-0001"

        token = uuid.uuid4().hex  # a rotation: pending, then promoted
        provider.stage_pending("svc/api_key", "value-after-rotation-0002", token=token)
        provider.promote("svc/api_key", token=token)

        assert cache.get_secret_string(secret_id) == "value-before-rotation-0001"  # stale
        time.sleep(1.5)
        assert short.get_secret_string(secret_id) == "value-after-rotation-0002"
        assert cache.get_secret_string(secret_id) == "value-before-rotation-0001"  # an hour
        cache.refresh_secret_now(secret_id)  # what an on_rotate callback would do
        assert cache.get_secret_string(secret_id) == "value-after-rotation-0002"
    finally:
        client.close()
        provider.close()
