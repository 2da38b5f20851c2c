"""moto in server mode, once per test session, corrected where it diverges from AWS.

The server runs in this process (``ThreadedMotoServer``), so its backend model can be patched
to behave like AWS Secrets Manager's documented API. Each correction is proven by a test in
``tests/integration/test_aws_provider.py``; the provider itself codes to AWS only.

Corrections (AWS behaviour, moto 5.2 behaviour):

1. ``UpdateSecretVersionStage`` moving AWSCURRENT moves what ``GetSecretValue`` without a
   stage returns, and a later ``PutSecretValue`` demotes exactly that version (moto kept its
   old default version: stale reads, then two AWSCURRENT labels).
2. ``PutSecretValue`` moves only the labels it names: the old AWSCURRENT becomes AWSPREVIOUS
   and keeps its other labels (moto replaced all of them).
3. Reusing a ``ClientRequestToken`` with another value fails with ResourceExistsException
   (moto overwrote a version labelled AWSPENDING).
4. ``PutSecretValue`` and ``UpdateSecretVersionStage`` on a secret scheduled for deletion fail
   with InvalidRequestException (moto accepted them).
5. ``ListSecretVersionIds`` leaves out versions without labels unless ``IncludeDeprecated``,
   reports each version's own creation date, and answers ResourceNotFoundException for a
   missing secret (moto listed everything, stamped "now", and failed with a 500).
6. ``DescribeSecret``'s ``VersionIdsToStages`` only lists versions that carry labels.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from moto.secretsmanager import models, responses
from moto.secretsmanager.exceptions import (
    InvalidRequestException,
    ResourceExistsException,
    SecretNotFoundException,
)
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
#: Fake credentials, given to the clients the tests build (never put in os.environ).
CREDENTIALS = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "aws_session_token": "testing",
}
_MARKED = "You can't perform this operation on the secret because it was marked for deletion."


@dataclass(frozen=True)
class MotoServer:
    """Where the session's moto server listens."""

    endpoint_url: str
    region: str = REGION

    def client(self, **config: Any) -> Any:
        """A raw boto3 Secrets Manager client on this server (close it after use)."""
        return boto3.session.Session().client(
            "secretsmanager",
            region_name=self.region,
            endpoint_url=self.endpoint_url,
            config=Config(**config) if config else None,
            **CREDENTIALS,
        )

    def reset(self) -> None:
        """``POST /moto-api/reset``: forget every secret."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()


def apply_moto_corrections() -> Callable[[], None]:
    """Patch moto's Secrets Manager model to follow AWS; returns the undo."""
    backend_cls = models.SecretsManagerBackend
    secret_cls = models.FakeSecret
    originals: list[tuple[type, str, Any]] = []

    def patch(cls: type, attribute: str, replacement: Any) -> None:
        originals.append((cls, attribute, cls.__dict__[attribute]))
        setattr(cls, attribute, replacement)

    update_stage = backend_cls.update_secret_version_stage
    check_existing = backend_cls._check_with_existing_secrets_and_versions
    put_value = backend_cls.put_secret_value

    def update_secret_version_stage(
        self: Any,
        secret_id: str,
        version_stage: str,
        remove_from_version_id: str,
        move_to_version_id: str,
    ) -> tuple[str, str]:
        if secret_id in self.secrets and self.secrets[secret_id].is_deleted():
            raise InvalidRequestException(_MARKED)  # correction 4
        result = update_stage(
            self, secret_id, version_stage, remove_from_version_id, move_to_version_id
        )
        if version_stage == "AWSCURRENT" and move_to_version_id:
            self.secrets[secret_id].set_default_version_id(move_to_version_id)  # correction 1
        return result

    def reset_default_version(self: Any, secret_version: dict[str, Any], version_id: str) -> None:
        new_labels = set(secret_version["version_stages"])
        for other_id, other in self.versions.items():
            if other_id == version_id:
                continue
            labels = other["version_stages"]
            had_current = "AWSCURRENT" in labels and "AWSCURRENT" in new_labels
            labels[:] = [s for s in labels if s not in new_labels and s != "AWSPREVIOUS"]
            if had_current:
                labels.append("AWSPREVIOUS")  # correction 2
        self.versions[version_id] = secret_version
        self.default_version_id = version_id

    def check_with_existing(
        self: Any,
        secret_name: str,
        client_request_token: str | None,
        secret_string: str | None,
        secret_binary: str | None,
        on_create: bool = False,
    ) -> Any:
        secret = self.secrets.get(secret_name) if client_request_token else None
        version = secret.versions.get(client_request_token) if secret is not None else None
        has_value = version is not None and (
            "secret_string" in version or "secret_binary" in version
        )
        if has_value and (
            version.get("secret_string") != secret_string
            or version.get("secret_binary") != secret_binary
        ):
            raise ResourceExistsException(  # correction 3
                f"You can't use ClientRequestToken {client_request_token} because that value "
                f"is already in use for a version of secret {secret.arn}."
            )
        if has_value:
            return secret  # same token, same value: AWS ignores the request
        return check_existing(
            self, secret_name, client_request_token, secret_string, secret_binary, on_create
        )

    def put_secret_value(self: Any, secret_id: str, *args: Any, **kwargs: Any) -> str:
        if secret_id in self.secrets and self.secrets[secret_id].is_deleted():
            raise InvalidRequestException(_MARKED)  # correction 4
        return str(put_value(self, secret_id, *args, **kwargs))

    def list_secret_version_ids(self: Any, secret_id: str, include_deprecated: bool = False) -> str:
        if secret_id not in self.secrets:
            raise SecretNotFoundException()  # correction 5
        secret = self.secrets[secret_id]
        versions = [
            {
                "CreatedDate": version["createdate"],
                "VersionId": version_id,
                "VersionStages": version["version_stages"],
            }
            for version_id, version in secret.versions.items()
            if include_deprecated or version["version_stages"]
        ]
        return json.dumps({"ARN": secret.arn, "Name": secret.name, "Versions": versions})

    def list_secret_version_ids_response(self: Any) -> str:
        return str(
            self.backend.list_secret_version_ids(
                secret_id=self._get_param("SecretId", if_none=""),
                include_deprecated=bool(self._get_param("IncludeDeprecated", if_none=False)),
            )
        )

    def form_version_ids_to_stages(self: Any) -> dict[str, list[str]]:
        return {  # correction 6
            version_id: version["version_stages"]
            for version_id, version in self.versions.items()
            if version["version_stages"]
        }

    patch(backend_cls, "update_secret_version_stage", update_secret_version_stage)
    patch(secret_cls, "reset_default_version", reset_default_version)
    patch(backend_cls, "_check_with_existing_secrets_and_versions", check_with_existing)
    patch(backend_cls, "put_secret_value", put_secret_value)
    patch(backend_cls, "list_secret_version_ids", list_secret_version_ids)
    patch(
        responses.SecretsManagerResponse,
        "list_secret_version_ids",
        list_secret_version_ids_response,
    )
    patch(secret_cls, "_form_version_ids_to_stages", form_version_ids_to_stages)

    def undo() -> None:
        for cls, attribute, original in reversed(originals):
            setattr(cls, attribute, original)

    return undo


@contextmanager
def running_moto_server() -> Iterator[MotoServer]:
    """moto's Secrets Manager over HTTP on a free local port, corrected; stopped on exit."""
    undo = apply_moto_corrections()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    handle = MotoServer(endpoint_url=f"http://{host}:{port}")
    try:
        yield handle
    finally:
        try:
            handle.reset()
        finally:
            server.stop()
            if server._server is not None:  # stop() shuts down but leaves the socket open
                server._server.server_close()
            undo()
