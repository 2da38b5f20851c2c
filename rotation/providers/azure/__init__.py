"""Azure Key Vault, by concern: ``provider`` (the secret calls and pending siblings), ``config``
(credentials and client settings), ``names`` (secret name mapping) and ``errors``."""

from __future__ import annotations

from rotation.providers.azure.provider import AzureKeyVaultProvider

__all__ = ["AzureKeyVaultProvider"]
