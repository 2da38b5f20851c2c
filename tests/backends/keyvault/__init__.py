"""An HTTPS Azure Key Vault emulator (secrets API) for tests: no emulator exists in any registry.

Written against the documented REST API as azure-keyvault-secrets 4.12 uses it (what the
provider relies on is in docs/backends/azure.md): the bearer challenge, ``api-version``,
versions with 32-hex ids, paging with ``nextLink``, soft delete / recover / purge, 409 on a
deleted name, 403 for a disabled secret, case-insensitive names. ``KeyVaultEmulator.faults``
injects 503/429 answers, dropped connections and latency.
"""

from tests.backends.keyvault.certs import TLSFiles, make_tls_files
from tests.backends.keyvault.server import CHALLENGE_RESOURCE, KeyVaultEmulator, RequestRecord
from tests.backends.keyvault.vault import ApiError, Vault

__all__ = [
    "CHALLENGE_RESOURCE",
    "ApiError",
    "KeyVaultEmulator",
    "RequestRecord",
    "TLSFiles",
    "Vault",
    "make_tls_files",
]
