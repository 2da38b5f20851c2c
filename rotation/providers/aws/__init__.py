"""AWS Secrets Manager, by concern: ``provider`` (the API calls and staging labels), ``config``
(client settings from the environment) and ``errors`` (translation of botocore errors)."""

from __future__ import annotations

from rotation.providers.aws.provider import AWSSecretsManagerProvider

__all__ = ["AWSSecretsManagerProvider"]
