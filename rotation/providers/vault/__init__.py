"""HashiCorp Vault / OpenBao KV v2, by concern: ``provider`` (the KV v2 calls) and ``auth``
(token, AppRole and Kubernetes logins, error translation)."""

from __future__ import annotations

from rotation.providers.vault.provider import VaultProvider

__all__ = ["VaultProvider"]
