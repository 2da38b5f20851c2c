"""AWS settings from the environment, and the botocore session and boto3 client they build."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import NoRegionError, ProfileNotFound

from rotation.errors import ConfigurationError

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_RECOVERY_WINDOW_DAYS",
    "make_client",
    "settings_from_env",
]

DEFAULT_RECOVERY_WINDOW_DAYS = 30
DEFAULT_MAX_RETRIES = 4


def settings_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Keyword arguments of the provider from ``AWS_*`` variables (see its ``from_env``)."""
    window = (environ.get("AWS_RECOVERY_WINDOW_DAYS") or "").strip()
    try:
        days = int(window) if window else DEFAULT_RECOVERY_WINDOW_DAYS
    except ValueError:
        raise ConfigurationError(
            f"AWS_RECOVERY_WINDOW_DAYS must be a whole number of days (7-30), not {window!r}."
        ) from None
    attempts = (environ.get("AWS_MAX_ATTEMPTS") or "").strip()
    if attempts and not (attempts.isdigit() and int(attempts) >= 1):
        raise ConfigurationError(f"AWS_MAX_ATTEMPTS must be a number >= 1, not {attempts!r}.")
    return dict(
        region=environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or None,
        endpoint_url=environ.get("AWS_ENDPOINT_URL_SECRETS_MANAGER")
        or environ.get("AWS_ENDPOINT_URL")
        or None,
        prefix=environ.get("AWS_SECRETS_PREFIX", ""),
        recovery_window_days=days,
        aws_access_key_id=environ.get("AWS_ACCESS_KEY_ID") or None,
        aws_secret_access_key=environ.get("AWS_SECRET_ACCESS_KEY") or None,
        aws_session_token=environ.get("AWS_SESSION_TOKEN") or None,
        botocore_session=_session(environ),
        max_retries=int(attempts) - 1 if attempts else DEFAULT_MAX_RETRIES,
    )


def make_client(
    *,
    region: str | None,
    endpoint_url: str | None,
    aws_access_key_id: str | None,
    aws_secret_access_key: str | None,
    aws_session_token: str | None,
    botocore_session: botocore.session.Session | None,
    connect_timeout: float,
    read_timeout: float,
    max_retries: int,
    max_pool_connections: int,
) -> tuple[str, Any]:
    """The region (from the profile when not given) and a ``secretsmanager`` client for it."""
    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "max_attempts": max_retries},
        max_pool_connections=max_pool_connections,
    )
    try:
        session = boto3.session.Session(botocore_session=botocore_session or _session({}))
        region = region or session.region_name
        if not region:
            raise ConfigurationError(
                "AWS region not set: set AWS_REGION (or AWS_DEFAULT_REGION), or `region` in "
                "the profile in ~/.aws/config."
            )
        client = session.client(
            "secretsmanager",
            region_name=region,
            endpoint_url=endpoint_url or None,
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
            aws_session_token=aws_session_token,
            config=config,
        )
    except (NoRegionError, ProfileNotFound, ValueError) as exc:
        raise ConfigurationError(f"Cannot configure the AWS client: {exc}") from exc
    return region, client


def _session(environ: Mapping[str, str]) -> botocore.session.Session:
    """A botocore session for boto3's default credential chain, honouring the file locations,
    profile and IMDS switch given in ``environ`` as well as the process environment."""
    session = botocore.session.Session()
    for variable, key in (
        ("AWS_SHARED_CREDENTIALS_FILE", "credentials_file"),
        ("AWS_CONFIG_FILE", "config_file"),
        ("AWS_PROFILE", "profile"),
    ):
        if environ.get(variable):
            session.set_config_variable(key, environ[variable])
    if environ.get("AWS_EC2_METADATA_DISABLED", "").strip().lower() == "true":
        try:
            session.get_component("credential_provider").remove("iam-role")
        except ProfileNotFound as exc:
            raise ConfigurationError(f"Cannot configure the AWS client: {exc}") from exc
    return session
