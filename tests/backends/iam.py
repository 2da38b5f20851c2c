"""moto IAM with authentication enforced, for the AWS IAM access-key rotator's tests.

The server runs in its own process (``python -m tests.backends.iam``): moto's request counter
and ``INITIAL_NO_AUTH_ACTION_COUNT`` are process-wide, and the in-process Secrets Manager server
of ``tests/backends/motoserver.py`` must keep accepting its fake credentials. The child starts
with ``INITIAL_NO_AUTH_ACTION_COUNT=3``: those three requests create an admin user, its policy
and its access key; every later request must be signed by a known key and allowed by policy.
The child applies motoserver.py's Secrets Manager corrections and these IAM ones, then serves
on a free port on 127.0.0.1 until its stdin closes (so it also ends when pytest dies).

Corrections (AWS behaviour, moto 5.2 behaviour):

1. A request signed with an Inactive access key is refused with ``InvalidClientTokenId`` (403)
   like an unknown one (moto accepted it).
2. An IAM action naming a user (``UserName``, or implicitly the caller when it is left out, as
   in ``CreateAccessKey`` on oneself) is authorized against that user's ARN, so a policy with
   ``"Resource": "arn:aws:iam::<account>:user/<name>"`` works (moto checked every non-role IAM
   action against ``*``, which such a policy never matches).

Fixtures (registered in ``tests/conftest.py``):

- ``iam_server`` (session): an :class:`IamServer` with ``endpoint_url``, ``region``,
  ``admin`` (an :class:`IamUser`), ``client(service, access_key_id, secret_access_key)``,
  ``admin_client(service)``, ``accepts(access_key_id, secret_access_key)``,
  ``create_user(name)`` and ``delete_user(name)``.
- ``iam_user`` (function): an :class:`IamUser` with ``user_name``, ``arn``, ``access_key_id``,
  ``secret_access_key``, ``credentials`` and ``client(service)``: a fresh user whose policy
  allows ``iam:*AccessKey*`` on itself and ``sts:GetCallerIdentity``, with its first key;
  deleted (with its keys) after the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = ["IamServer", "IamUser", "apply_iam_corrections", "iam_server", "iam_user"]

#: Requests moto serves without authentication: CreateUser, PutUserPolicy, CreateAccessKey.
SETUP_REQUESTS = 3
ADMIN_USER = "kt-admin"
ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*",
                                                        "Resource": "*"}]}  # fmt: skip
SELF_POLICY_NAME = "rotate-own-access-keys"
_REPO = Path(__file__).resolve().parents[2]


def self_policy(user_arn: str) -> dict[str, Any]:
    """The policy a key-rotating user needs: its own access keys, and who am I."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iam:*AccessKey*", "Resource": user_arn},
            {"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"},
        ],
    }


@dataclass
class IamUser:
    """An IAM user and one of its access keys."""

    server: IamServer = field(repr=False)
    user_name: str
    arn: str
    access_key_id: str
    secret_access_key: str = field(repr=False)

    @property
    def credentials(self) -> dict[str, str]:
        """The key as boto3 keyword arguments."""
        return {
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
        }

    def client(self, service: str = "iam") -> Any:
        """A boto3 client signed with this key (caller closes it)."""
        return self.server.client(service, self.access_key_id, self.secret_access_key)


@dataclass
class IamServer:
    """The authenticating moto server process and its admin user."""

    endpoint_url: str
    region: str
    process: subprocess.Popen[bytes] = field(repr=False)
    root: Path
    admin: IamUser | None = None

    def client(self, service: str, access_key_id: str, secret_access_key: str) -> Any:
        """A boto3 client for ``service`` on this server signed with the given key."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            service,
            region_name=self.region,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(retries={"max_attempts": 1}),
        )

    def admin_client(self, service: str = "iam") -> Any:
        """A client signed with the admin's key (allowed everything)."""
        assert self.admin is not None
        return self.admin.client(service)

    def accepts(self, access_key_id: str, secret_access_key: str) -> bool:
        """Whether STS GetCallerIdentity succeeds with this key (False on InvalidClientTokenId)."""
        from botocore.exceptions import ClientError

        sts = self.client("sts", access_key_id, secret_access_key)
        try:
            sts.get_caller_identity()
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "InvalidClientTokenId":
                return False
            raise
        finally:
            sts.close()
        return True

    def create_user(self, name: str) -> IamUser:
        """Create ``name`` with :func:`self_policy` inline and its first access key."""
        iam = self.admin_client()
        try:
            return _create_user(self, iam, name, self_policy)
        finally:
            iam.close()

    def delete_user(self, name: str) -> None:
        """Delete ``name`` with its access keys and inline policies."""
        iam = self.admin_client()
        try:
            for key in iam.list_access_keys(UserName=name)["AccessKeyMetadata"]:
                iam.delete_access_key(UserName=name, AccessKeyId=key["AccessKeyId"])
            for policy in iam.list_user_policies(UserName=name)["PolicyNames"]:
                iam.delete_user_policy(UserName=name, PolicyName=policy)
            iam.delete_user(UserName=name)
        finally:
            iam.close()

    def log(self) -> str:
        path = self.root / "moto.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        """Close the child's stdin (it exits), kill it if it lingers, remove its files."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        shutil.rmtree(self.root, ignore_errors=True)


def _create_user(
    server: IamServer, iam: Any, name: str, policy: Callable[[str], dict[str, Any]]
) -> IamUser:
    arn = iam.create_user(UserName=name)["User"]["Arn"]
    iam.put_user_policy(
        UserName=name, PolicyName=SELF_POLICY_NAME, PolicyDocument=json.dumps(policy(arn))
    )
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return IamUser(server, name, arn, key["AccessKeyId"], key["SecretAccessKey"])


def start_iam_server(timeout: float = 60.0) -> IamServer:
    """Start the child server, then create the admin user in its unauthenticated requests."""
    from tests.backends.motoserver import REGION  # imports moto: only when a test needs it

    root = Path(tempfile.mkdtemp(prefix="keyturn-iam-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(SETUP_REQUESTS)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO), env.get("PYTHONPATH")]))
    with open(root / "moto.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.backends.iam"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=_REPO, env=env,
        )  # fmt: skip
    server = IamServer("", REGION, process, root)
    try:
        port = _read_port(process, timeout)
        server.endpoint_url = f"http://127.0.0.1:{port}"
        # the unauthenticated requests: signed with a key moto does not know yet
        bootstrap = server.client("iam", "AKIAKEYTURNBOOTSTRAP", "bootstrap")
        try:
            server.admin = _create_user(server, bootstrap, ADMIN_USER, lambda _: ADMIN_POLICY)
        finally:
            bootstrap.close()
    except BaseException as exc:
        log_text = server.log()
        server.stop()
        if isinstance(exc, Exception):
            raise RuntimeError(f"moto IAM server did not start: {exc}\n{log_text}") from exc
        raise
    return server


def _read_port(process: subprocess.Popen[bytes], timeout: float) -> int:
    """The port the child prints on its first stdout line."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise RuntimeError(f"no port from the server within {timeout} s")
    line = process.stdout.readline()
    if not line.strip():
        raise RuntimeError(f"the server exited with code {process.wait(timeout=10)}")
    return int(line)


def apply_iam_corrections() -> Callable[[], None]:
    """Patch moto's IAM authentication to follow AWS (see the module docstring); the undo."""
    from moto.iam import access_control
    from moto.iam.models import iam_backends
    from moto.iam.responses import IamResponse

    key_cls = access_control.IAMUserAccessKey
    init = key_cls.__init__
    determine_resource = IamResponse._determine_resource

    def key_init(self: Any, account_id: str, partition: str, access_key_id: str,
                 headers: dict[str, str]) -> None:  # fmt: skip
        init(self, account_id, partition, access_key_id, headers)
        user = self.backend.get_user(self._owner_user_name)
        key = next(k for k in user.access_keys if k.access_key_id == access_key_id)
        if key.status != "Active":
            raise access_control.CreateAccessKeyFailure(reason="InvalidId")  # correction 1

    def determine_user_resource(self: Any) -> str:
        resource = str(determine_resource(self))
        if resource != "*":
            return resource
        backend = iam_backends[self.current_account][self.partition]
        name = self._get_param("UserName")
        user = backend.users.get(name) if name else None
        if not name:  # the caller itself (CreateAccessKey, ListAccessKeys... on oneself)
            user = backend.get_user_from_access_key_id(self.get_access_key())
        if user is not None:
            return str(user.arn)  # correction 2
        if name:  # CreateUser: the user to be
            return f"arn:{self.partition}:iam::{self.current_account}:user/{name}"
        return "*"

    key_cls.__init__ = key_init  # type: ignore[method-assign]
    IamResponse._determine_resource = determine_user_resource  # type: ignore[method-assign]

    def undo() -> None:
        key_cls.__init__ = init  # type: ignore[method-assign]
        IamResponse._determine_resource = determine_resource  # type: ignore[method-assign]

    return undo


def serve() -> None:
    """The child: corrected moto on a free port; prints the port, serves until stdin closes."""
    from moto.server import ThreadedMotoServer

    from tests.backends.motoserver import apply_moto_corrections

    apply_moto_corrections()
    apply_iam_corrections()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    print(server.get_host_and_port()[1], flush=True)
    sys.stdin.read()
    server.stop()


@pytest.fixture(scope="session")
def iam_server() -> Iterator[IamServer]:
    """The authenticating moto IAM server for the whole session, stopped at its end."""
    pytest.importorskip("boto3")
    pytest.importorskip("moto.server")
    server = start_iam_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def iam_user(iam_server: IamServer) -> Iterator[IamUser]:
    """A fresh IAM user allowed to rotate its own access keys, with its first key."""
    name = f"kt-{uuid.uuid4().hex[:10]}"
    user = iam_server.create_user(name)
    try:
        yield user
    finally:
        iam_server.delete_user(name)


if __name__ == "__main__":
    serve()
