"""The kinds the contract runs for, each against its real server (``subject``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from rotation.providers.memory import MemoryProvider
from rotation.values import SecretValue
from tests.adapters.reference_adapter import Adapter
from tests.backends.certs import InternalCaCerts, OpenBaoCerts
from tests.backends.iam import IamServer, IamUser
from tests.backends.mariadb import MariaDbDatabase, quote_identifier
from tests.backends.openbao_pki import OpenBaoPki
from tests.backends.pgserver import PgDatabase
from tests.backends.redis_acl import RedisAclServer
from tests.backends.slapd import LdapAccount, SlapdServer
from tests.contract.harness import Subject
from tests.contract.issuer import Issuer

#: Every kind, and every mode with promises of its own.
SUBJECTS = [
    "random",
    "postgres",
    "postgres_single",
    "mysql",
    "mysql_single",
    "redis",
    "external",
    "external_command",
    "aws_iam",
    "aws_iam_self",
    "ldap",
    "ldap_alternating",
    "certificate_internal",
    "certificate_openbao",
]


def _login(accepts: Any) -> Any:
    def works(value: SecretValue) -> bool:
        assert not isinstance(value, str)
        return bool(accepts(value["username"], value["password"]))

    return works


@pytest.fixture(params=SUBJECTS)
def subject(request: pytest.FixtureRequest) -> Subject:
    return request.getfixturevalue(f"{request.param}_subject")  # type: ignore[no-any-return]


@pytest.fixture
def random_subject() -> Subject:
    provider, secret = MemoryProvider(), f"keys/{uuid.uuid4().hex[:8]}"
    initial = "initial-" + uuid.uuid4().hex
    Issuer.seed(secret, initial)
    provider.write(secret, initial)
    return Subject(
        "random",
        "random",
        {"issuer": "tests.contract.issuer:Issuer"},
        provider,
        lambda value: Issuer.accepts(secret, value),
        secret=secret,
    )


def _postgres(db: PgDatabase, mode: str) -> Subject:
    provider, password = MemoryProvider(), "first-pass'word"
    role = db.alternating_pair("app", password)
    provider.write("db/admin", db.admin_secret)
    subject = Subject(
        f"postgres_{mode}",
        "postgres",
        {"mode": mode, "admin_secret": "db/admin", "connect_timeout": 3},
        provider,
        _login(db.accepts),
    )
    provider.write(subject.secret, db.credential(role, password))
    return subject


@pytest.fixture
def postgres_subject(pg_database: PgDatabase) -> Subject:
    return _postgres(pg_database, "alternating")


@pytest.fixture
def postgres_single_subject(pg_database: PgDatabase) -> Subject:
    return _postgres(pg_database, "single")


def _mysql(db: MariaDbDatabase, mode: str) -> Subject:
    provider, password = MemoryProvider(), "first-pass'wo\\rd"
    user = db.user("app")
    db.track_user(user + "_clone")
    with db.admin_connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
        cur.execute(f"GRANT SELECT, INSERT ON {quote_identifier(db.name)}.* TO %s@'%%'", (user,))
    provider.write("db/admin", db.admin_secret)
    subject = Subject(
        f"mysql_{mode}",
        "mysql",
        {"mode": mode, "admin_secret": "db/admin", "connect_timeout": 3},
        provider,
        _login(db.accepts),
    )
    provider.write(subject.secret, db.credential(user, password))
    return subject


@pytest.fixture
def mysql_subject(mariadb_database: MariaDbDatabase) -> Subject:
    return _mysql(mariadb_database, "alternating")


@pytest.fixture
def mysql_single_subject(mariadb_database: MariaDbDatabase) -> Subject:
    return _mysql(mariadb_database, "single")


@pytest.fixture
def redis_subject(redis_acl_server: RedisAclServer) -> Subject:
    server, provider, password = redis_acl_server, MemoryProvider(), "first-pass word"
    admin = server.admin_client()
    try:
        admin.execute_command("ACL", "SETUSER", "app", "on", f">{password}", "~app:*", "+@all")
    finally:
        admin.close()
    provider.write("redis/admin", server.credential(server.admin_user, server.admin_password))
    subject = Subject(
        "redis",
        "redis",
        {"admin_secret": "redis/admin", "connect_timeout": 3},
        provider,
        _login(server.accepts),
    )
    provider.write(subject.secret, server.credential("app", password))
    return subject


@pytest.fixture
def external_subject(external_adapter: Adapter) -> Subject:
    provider = MemoryProvider()
    provider.write("adapter/hmac", external_adapter.store.hmac_key)
    subject = Subject(
        "external",
        "external",
        {
            "url": external_adapter.url,
            "hmac_secret": "adapter/hmac",
            "ca_file": str(external_adapter.ca_file),
            "timeout": "5s",
        },
        provider,
        external_adapter.store.accepts,
    )
    provider.write(subject.secret, external_adapter.store.issue_initial())
    return subject


@pytest.fixture
def external_command_subject(tmp_path: Any) -> Subject:
    import secrets
    import sys

    from tests.adapters.reference_adapter import KeyStore
    from tests.backends.cluster import REPO

    state = tmp_path / "adapter-state.json"
    store = KeyStore(secrets.token_urlsafe(32))
    initial = store.issue_initial()
    store.save(state)
    provider = MemoryProvider()
    provider.write("adapter/hmac", store.hmac_key)

    def works(value: SecretValue) -> bool:
        return KeyStore.load(state).accepts(value)

    subject = Subject(
        "external_command",
        "external",
        {
            "command": [
                sys.executable,
                str(REPO / "tests/adapters/reference_adapter.py"),
                str(state),
            ],
            "hmac_secret": "adapter/hmac",
            "timeout": "20s",
        },
        provider,
        works,
    )
    provider.write(subject.secret, initial)
    return subject


def _aws_iam(server: IamServer, user: IamUser, admin: bool) -> Subject:
    provider = MemoryProvider()
    target: dict[str, Any] = {
        "endpoint_url": server.endpoint_url,
        "region": server.region,
        "ready_timeout": "3s",
        "timeout": 5,
    }
    if admin:
        assert server.admin is not None
        provider.write(
            "aws/admin",
            {
                "access_key_id": server.admin.access_key_id,
                "secret_access_key": server.admin.secret_access_key,
            },
        )
        target["admin_secret"] = "aws/admin"

    def works(value: SecretValue) -> bool:
        assert not isinstance(value, str)
        return server.accepts(value["access_key_id"], value["secret_access_key"])

    subject = Subject("aws_iam" if admin else "aws_iam_self", "aws-iam", target, provider, works)
    initial = {"access_key_id": user.access_key_id, "secret_access_key": user.secret_access_key}
    if admin:  # the self-managed subject learns its user name from STS
        initial["user_name"] = user.user_name
    provider.write(subject.secret, initial)
    return subject


@pytest.fixture
def aws_iam_subject(iam_server: IamServer, iam_user: IamUser) -> Subject:
    return _aws_iam(iam_server, iam_user, admin=True)


@pytest.fixture
def aws_iam_self_subject(iam_server: IamServer, iam_user: IamUser) -> Subject:
    return _aws_iam(iam_server, iam_user, admin=False)


def _ldap(server: SlapdServer, account: LdapAccount, mode: str) -> Subject:
    provider = MemoryProvider()
    target: dict[str, Any] = {"mode": mode, "connect_timeout": 3}
    if mode == "alternating":
        clone = account.dn.replace(f"uid={account.name},", f"uid={account.name}_clone,", 1)
        server.add_service_account(f"{account.name}_clone", uuid.uuid4().hex)
        server.track(clone)
        provider.write("ldap/admin", {"bind_dn": server.root_dn, "password": server.root_password})
        target["admin_secret"] = "ldap/admin"

    def works(value: SecretValue) -> bool:
        assert not isinstance(value, str)
        return server.accepts(value["bind_dn"], value["password"])

    subject = Subject(
        "ldap" if mode == "single" else "ldap_alternating",
        "ldap",
        target,
        provider,
        works,
        keeps_rolled_back=mode == "alternating",
    )
    provider.write(
        subject.secret,
        {"url": server.url, "bind_dn": account.dn, "password": account.password},
    )
    return subject


@pytest.fixture
def ldap_subject(slapd_server: SlapdServer, ldap_service_account: LdapAccount) -> Subject:
    return _ldap(slapd_server, ldap_service_account, "single")


@pytest.fixture
def ldap_alternating_subject(
    slapd_server: SlapdServer, ldap_service_account: LdapAccount
) -> Iterator[Subject]:
    yield _ldap(slapd_server, ldap_service_account, "alternating")
    slapd_server.delete_tracked()


@pytest.fixture
def certificate_internal_subject() -> Subject:
    provider, ca = MemoryProvider(), InternalCaCerts()
    provider.write("pki/ca", ca.ca)
    subject = Subject(
        "certificate_internal",
        "certificate",
        {"issuer": "internal", "ca_secret": "pki/ca", "ttl": "7d"},
        provider,
        ca.accepts,
        secret="tls/app",
        keeps_rolled_back=True,
        issued_at_create=True,
        keeps_discarded=True,
    )
    provider.write(subject.secret, ca.issue())
    return subject


@pytest.fixture
def certificate_openbao_subject(
    openbao_pki: OpenBaoPki, monkeypatch: pytest.MonkeyPatch
) -> Subject:
    certs, provider = OpenBaoCerts(openbao_pki), MemoryProvider()
    for name, value in certs.env.items():
        monkeypatch.setenv(name, value)
    subject = Subject(
        "certificate_openbao",
        "certificate",
        {"issuer": "openbao", "mount": openbao_pki.mount, "role": openbao_pki.role, "ttl": "2h"},
        provider,
        certs.accepts,
        secret="tls/app",
        keeps_rolled_back=True,
        issued_at_create=True,
    )
    provider.write(subject.secret, certs.issue())
    return subject
