"""The ``aws-iam`` kind's ``target`` block."""

from __future__ import annotations

import re
from datetime import timedelta

from pydantic import Field, field_validator

from rotation.durations import Duration
from rotation.schema import Spec, check_secret_name, short_repr

__all__ = ["AwsIamTarget"]

_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d+")


class AwsIamTarget(Spec):
    """``aws-iam``: rotate an IAM user's access key with the admin's key, or with itself."""

    #: A secret ``{"access_key_id", "secret_access_key"}`` allowed to manage the user's keys;
    #: default: the rotated key manages its own user (``iam:*AccessKey*`` on itself).
    admin_secret: str | None = None
    #: The region of the STS endpoint the new key is tested against.
    region: str = "us-east-1"
    #: IAM and STS at another URL (a VPC endpoint, a test server); default: AWS's.
    endpoint_url: str | None = None
    #: How long ``test`` waits for a new key to be accepted (IAM is eventually consistent: a
    #: new key takes a few seconds to work everywhere); capped by the step's budget.
    ready_timeout: Duration = timedelta(seconds=60)
    #: Each call's connect and read timeout, in seconds.
    timeout: float = Field(default=10, gt=0, le=120)

    @field_validator("admin_secret")
    @classmethod
    def _admin(cls, value: str | None) -> str | None:
        return None if value is None else check_secret_name(value)

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not _REGION.fullmatch(value):
            raise ValueError(f"invalid AWS region {short_repr(value)}, e.g. 'eu-west-1'")
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError(f"invalid endpoint_url {short_repr(value)}: use https://...")
        return value

    @field_validator("ready_timeout")
    @classmethod
    def _ready(cls, value: timedelta) -> timedelta:
        if value > timedelta(minutes=4):
            raise ValueError("must be at most 4m (a step's budget)")
        return value
