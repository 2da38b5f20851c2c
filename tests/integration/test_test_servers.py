"""Smoke tests of the throwaway servers the rotators are tested against.

Each proves what a rotator of that kind relies on, refusals included: MariaDB users and
``ALTER USER``, Redis ACL users with two passwords, LDAP self-service password modify (RFC 3062),
IAM access keys with authentication enforced (an Inactive key refused, as on AWS), and OpenBao
PKI issuing certificates signed by its CA.
"""

from __future__ import annotations

import datetime
import uuid

import hvac
import pytest

from tests.backends.iam import IamServer, IamUser
from tests.backends.mariadb import MariaDbDatabase, quote_identifier
from tests.backends.openbao_pki import OpenBaoPki
from tests.backends.redis_acl import RedisAclServer
from tests.backends.slapd import LdapAccount, SlapdServer


def test_mariadb_user_login_password_change_and_grants(mariadb_database: MariaDbDatabase) -> None:
    db = mariadb_database
    user, old, new = db.user("app"), uuid.uuid4().hex, uuid.uuid4().hex
    with db.admin_connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, old))
        cur.execute(f"GRANT SELECT, INSERT ON {quote_identifier(db.name)}.* TO %s@'%%'", (user,))
    with db.connect(user, old) as conn, conn.cursor() as cur:
        cur.execute("SELECT CURRENT_USER(), DATABASE()")
        assert cur.fetchone() == (f"{user}@%", db.name)

    with db.admin_connect() as conn, conn.cursor() as cur:
        cur.execute("ALTER USER %s@'%%' IDENTIFIED BY %s", (user, new))
        cur.execute("SHOW GRANTS FOR %s@'%%'", (user,))
        grants = [row[0] for row in cur.fetchall()]

    assert db.accepts(user, new)
    assert not db.accepts(user, old)
    assert not db.accepts(user, "")
    assert any(f"GRANT SELECT, INSERT ON `{db.name}`.* TO `{user}`@`%`" in g for g in grants)
    assert any("IDENTIFIED BY PASSWORD" in g for g in grants)


def test_mariadb_admin_may_create_users_and_grant(mariadb_database: MariaDbDatabase) -> None:
    server = mariadb_database.server
    with server.admin_connect() as conn, conn.cursor() as cur:
        cur.execute("SHOW GRANTS FOR CURRENT_USER()")
        grants = " ".join(row[0] for row in cur.fetchall())
    assert f"GRANT ALL PRIVILEGES ON *.* TO `{server.admin_user}`@`%`" in grants
    assert "WITH GRANT OPTION" in grants
    assert not server.accepts(server.admin_user, "wrong")


def test_redis_acl_user_holds_two_passwords(redis_acl_server: RedisAclServer) -> None:
    server = redis_acl_server
    admin = server.admin_client()
    try:
        admin.execute_command("ACL", "SETUSER", "app", "on", ">first", ">second", "~app:*", "+@all")
        assert server.accepts("app", "first")
        assert server.accepts("app", "second")
        assert not server.accepts("app", "third")

        admin.execute_command("ACL", "SETUSER", "app", "<first")
        assert not server.accepts("app", "first")
        assert server.accepts("app", "second")
    finally:
        admin.close()
    # the default user needs its password too: nothing is reachable without one
    assert not server.accepts("default", "wrong")
    assert server.accepts("default", server.default_password)


def test_ldap_service_account_changes_its_own_password(
    slapd_server: SlapdServer, ldap_service_account: LdapAccount
) -> None:
    account, new = ldap_service_account, uuid.uuid4().hex
    conn = slapd_server.connect(account.dn, account.password)
    try:
        assert conn.extend.standard.who_am_i() == f"dn:{account.dn}"
        changed = conn.extend.standard.modify_password(
            old_password=account.password, new_password=new
        )
        assert changed is True, conn.result
    finally:
        conn.unbind()

    assert slapd_server.accepts(account.dn, new)
    assert not slapd_server.accepts(account.dn, account.password)


def test_ldap_account_cannot_change_another_password(
    slapd_server: SlapdServer, ldap_service_account: LdapAccount
) -> None:
    other_password = uuid.uuid4().hex
    other = slapd_server.add_service_account(f"other-{uuid.uuid4().hex[:8]}", other_password)
    try:
        conn = slapd_server.connect(ldap_service_account.dn, ldap_service_account.password)
        try:
            changed = conn.extend.standard.modify_password(user=other, new_password="x" * 16)
            assert changed is False
            assert conn.result["description"] == "insufficientAccessRights"
        finally:
            conn.unbind()
        assert slapd_server.accepts(other, other_password)
    finally:
        slapd_server.delete(other)


def _caller_arn(server: IamServer, access_key_id: str, secret_access_key: str) -> str:
    sts = server.client("sts", access_key_id, secret_access_key)
    try:
        return str(sts.get_caller_identity()["Arn"])
    finally:
        sts.close()


def test_iam_access_key_rotation_refuses_inactive_and_deleted_keys(
    iam_server: IamServer, iam_user: IamUser
) -> None:
    from botocore.exceptions import ClientError

    first = iam_user
    assert _caller_arn(iam_server, first.access_key_id, first.secret_access_key) == first.arn

    iam = first.client("iam")
    try:
        second = iam.create_access_key()["AccessKey"]  # no UserName: the caller itself
        assert second["UserName"] == first.user_name
        assert iam_server.accepts(second["AccessKeyId"], second["SecretAccessKey"])
        iam.update_access_key(AccessKeyId=first.access_key_id, Status="Inactive")
    finally:
        iam.close()

    assert not iam_server.accepts(first.access_key_id, first.secret_access_key)
    iam = iam_server.client("iam", second["AccessKeyId"], second["SecretAccessKey"])
    try:
        keys = {k["AccessKeyId"]: k["Status"] for k in iam.list_access_keys()["AccessKeyMetadata"]}
        assert keys == {first.access_key_id: "Inactive", second["AccessKeyId"]: "Active"}
        iam.delete_access_key(AccessKeyId=first.access_key_id)
    finally:
        iam.close()

    assert not iam_server.accepts(first.access_key_id, first.secret_access_key)
    assert iam_server.accepts(second["AccessKeyId"], second["SecretAccessKey"])
    with pytest.raises(ClientError) as refused:  # a known key with the wrong secret
        iam_server.accepts(second["AccessKeyId"], "wrong-secret")
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_iam_policy_confines_a_user_to_its_own_keys(
    iam_server: IamServer, iam_user: IamUser
) -> None:
    from botocore.exceptions import ClientError

    assert iam_server.admin is not None
    assert not iam_server.accepts("AKIAUNKNOWNKEY000000", "secret")
    iam = iam_user.client("iam")
    try:
        with pytest.raises(ClientError) as refused:
            iam.create_access_key(UserName=iam_server.admin.user_name)
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
        with pytest.raises(ClientError) as refused:
            iam.list_users()
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
    finally:
        iam.close()


def test_openbao_pki_issues_certificates_signed_by_its_ca(openbao_pki: OpenBaoPki) -> None:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec

    address, token, mount, role = openbao_pki
    assert token and address.startswith("http")
    client = openbao_pki.client()
    try:
        issued = client.secrets.pki.generate_certificate(
            role, "app.keyturn.test", extra_params={"ttl": "1h"}, mount_point=mount
        )["data"]
        with pytest.raises(hvac.exceptions.InvalidRequest, match="not allowed"):
            client.secrets.pki.generate_certificate(role, "app.example.com", mount_point=mount)
    finally:
        client.adapter.close()

    ca = x509.load_pem_x509_certificate(openbao_pki.ca_pem.encode())
    cert = x509.load_pem_x509_certificate(issued["certificate"].encode())
    assert issued["issuing_ca"].strip() == openbao_pki.ca_pem.strip()
    cert.verify_directly_issued_by(ca)  # raises when the signature does not match
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "app.keyturn.test" in names.get_values_for_type(x509.DNSName)
    assert cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) <= datetime.timedelta(
        hours=1, minutes=1
    )
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)

    other = ec.generate_private_key(ec.SECP256R1())
    forged = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(ca.subject)
        .public_key(other.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
        .sign(other, cert.signature_hash_algorithm)  # type: ignore[arg-type]
    )
    with pytest.raises(InvalidSignature):
        forged.verify_directly_issued_by(ca)
