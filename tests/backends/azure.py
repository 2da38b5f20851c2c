"""The azure provider against the HTTPS Key Vault emulator (tests/backends/keyvault/).

``keyvault_emulator`` is one emulator for the whole session; ``azure_provider`` hands each test
a provider confined to a fresh, unique ``AZURE_SECRETS_PREFIX`` on it, with faults reset.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from rotation.providers.azure.provider import AzureKeyVaultProvider, StaticTokenCredential
from tests.backends.keyvault import KeyVaultEmulator

#: The bearer token the session emulator accepts.
KEYVAULT_TOKEN = "keyturn-test-token"


@pytest.fixture(scope="session")
def keyvault_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyVaultEmulator]:
    emulator = KeyVaultEmulator(
        tokens={KEYVAULT_TOKEN}, tls_dir=tmp_path_factory.mktemp("keyvault-tls")
    )
    with emulator:
        yield emulator


def unique_prefix() -> str:
    """A Key Vault name prefix no other test uses (all have the same length: none nests)."""
    return f"t{uuid.uuid4().hex[:12]}-"


def make_azure_provider(
    emulator: KeyVaultEmulator, *, prefix: str | None = None, token: str = KEYVAULT_TOKEN, **kwargs
) -> AzureKeyVaultProvider:
    return AzureKeyVaultProvider(
        emulator.url,
        credential=StaticTokenCredential(token),
        prefix=unique_prefix() if prefix is None else prefix,
        verify_challenge_resource=False,
        ca_bundle=emulator.ca_bundle,
        **kwargs,
    )


@pytest.fixture
def azure_provider(keyvault_emulator: KeyVaultEmulator) -> Iterator[AzureKeyVaultProvider]:
    keyvault_emulator.faults()
    provider = make_azure_provider(keyvault_emulator)
    try:
        yield provider
    finally:
        keyvault_emulator.faults()
        keyvault_emulator.vault.delete_delay = 0.0
        provider.close()
