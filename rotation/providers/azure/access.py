"""What the Azure principal may do on the vault, asked without writing.

- read: the properties and the current version of each secret (``get_secret``; the value is
  dropped at once: only the call's success matters);
- list: one page of ``list_properties_of_secrets``;
- write a pending version: **not verifiable**. Key Vault's data plane has no call that says
  what a principal may do without doing it (and the management plane's permission listing
  needs Azure Resource Manager access a worker does not have). Doctor reports it as not
  verified: grant the worker the "Key Vault Secrets Officer" role (or the access policy's
  Set permission).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rotation.errors import KeyturnError
from rotation.providers.base import LIST, READ, WRITE_PENDING, AccessCheck

__all__ = ["check_access"]

# ``provider`` is the AzureKeyVaultProvider (not imported: it imports this module).


def check_access(provider: Any, names: Sequence[str]) -> list[AccessCheck]:
    read = AccessCheck(READ, True, f"get_secret of {len(names)} secret(s)")
    for name in names:
        try:
            provider.read(name)  # the value is not kept: only that the call succeeds
        except KeyturnError as exc:
            read = AccessCheck(READ, False, f"{name}: {exc.message}")
            break
    try:
        provider.list()
        listed = AccessCheck(LIST, True, "list_properties_of_secrets")
    except KeyturnError as exc:
        listed = AccessCheck(LIST, False, exc.message)
    write = AccessCheck(
        WRITE_PENDING,
        None,
        "not verifiable on Key Vault without a write: grant the Key Vault Secrets Officer role "
        "(or the access policy's Set permission)",
    )
    return [read, write, listed]
