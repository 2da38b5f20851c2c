"""The ``aws-iam`` kind beyond the contract, against moto's IAM with authentication on: the
second key slot (a retired key deleted to make room, an active stranger refused, a user whose
keys are not the secret's refused), the pending key switched off until apply, and messages
that never carry a secret access key."""

from __future__ import annotations

from typing import Any

import pytest

from rotation.errors import KeyturnError, TargetRejected
from rotation.run.states import RunState
from tests.backends.iam import IamServer, IamUser
from tests.contract.conftest import _aws_iam
from tests.contract.harness import Rotation, Subject


@pytest.fixture
def subject(iam_server: IamServer, iam_user: IamUser) -> Subject:
    return _aws_iam(iam_server, iam_user, admin=True)


def _keys(server: IamServer, user: IamUser) -> dict[str, str]:
    iam = server.admin_client()
    try:
        listed = iam.list_access_keys(UserName=user.user_name)["AccessKeyMetadata"]
    finally:
        iam.close()
    return {k["AccessKeyId"]: k["Status"] for k in listed}


def test_the_pending_key_is_switched_off_until_apply(
    subject: Subject, iam_server: IamServer, iam_user: IamUser
) -> None:
    run = Rotation(subject).until(RunState.CREATED)
    new: Any = run.new_value()
    assert _keys(iam_server, iam_user) == {
        iam_user.access_key_id: "Active",
        new["access_key_id"]: "Inactive",
    }
    assert new["user_name"] == iam_user.user_name
    run.until(RunState.APPLIED)
    assert _keys(iam_server, iam_user)[new["access_key_id"]] == "Active"
    assert subject.works(new) and subject.works(run.initial)


def test_a_retired_key_is_deleted_by_the_next_rotation(
    subject: Subject, iam_server: IamServer, iam_user: IamUser
) -> None:
    first = Rotation(subject).finish()
    second_key: Any = first.new_value()
    assert _keys(iam_server, iam_user) == {
        iam_user.access_key_id: "Inactive",  # retired, kept: it can be switched on again
        second_key["access_key_id"]: "Active",
    }
    third: Any = Rotation(subject).finish().new_value()
    assert _keys(iam_server, iam_user) == {
        second_key["access_key_id"]: "Inactive",
        third["access_key_id"]: "Active",
    }


def test_an_active_second_key_is_never_deleted(
    subject: Subject, iam_server: IamServer, iam_user: IamUser
) -> None:
    iam = iam_server.admin_client()
    try:
        stranger = iam.create_access_key(UserName=iam_user.user_name)["AccessKey"]
    finally:
        iam.close()
    run = Rotation(subject)
    with pytest.raises(TargetRejected, match="already holds a second, active access key") as err:
        run.step()
    assert stranger["AccessKeyId"] in str(err.value)
    assert stranger["SecretAccessKey"] not in str(err.value)
    assert _keys(iam_server, iam_user) == {
        iam_user.access_key_id: "Active",
        stranger["AccessKeyId"]: "Active",
    }
    assert iam_server.accepts(stranger["AccessKeyId"], stranger["SecretAccessKey"])


def test_two_keys_neither_current_are_refused_cleanly(
    subject: Subject, iam_server: IamServer, iam_user: IamUser
) -> None:
    iam = iam_server.admin_client()
    try:
        made = [iam.create_access_key(UserName=iam_user.user_name)["AccessKey"]]
        iam.delete_access_key(UserName=iam_user.user_name, AccessKeyId=iam_user.access_key_id)
        made.append(iam.create_access_key(UserName=iam_user.user_name)["AccessKey"])
    finally:
        iam.close()
    before = _keys(iam_server, iam_user)
    with pytest.raises(TargetRejected, match="already holds two access keys") as err:
        Rotation(subject).step()
    message = str(err.value)
    assert iam_user.access_key_id in message and all(k["AccessKeyId"] in message for k in made)
    assert not any(k["SecretAccessKey"] in message for k in made)
    assert _keys(iam_server, iam_user) == before  # nothing touched
    assert subject.provider.versions(subject.secret)[0].stages  # nothing staged
    assert len(subject.provider.versions(subject.secret)) == 1


def test_a_wrong_admin_key_fails_without_its_secret(
    subject: Subject, iam_server: IamServer
) -> None:
    subject.provider.write(
        "aws/admin", {"access_key_id": "AKIAWRONGWRONGWRONG0", "secret_access_key": "s3cr3t-x"}
    )
    with pytest.raises(KeyturnError) as err:
        Rotation(subject).step()
    assert "InvalidClientTokenId" in str(err.value) and "s3cr3t-x" not in str(err.value)


def test_a_key_an_interrupted_create_left_is_deleted_by_the_next_try(
    subject: Subject, iam_server: IamServer, iam_user: IamUser
) -> None:
    run = Rotation(subject)
    rotator = run.step_input().rotator
    lost: Any = rotator.create(run.context(), subject.current())  # never staged: a crash
    assert _keys(iam_server, iam_user)[lost["access_key_id"]] == "Inactive"
    run.step()  # the redelivered create
    kept: Any = run.new_value()
    assert kept["access_key_id"] != lost["access_key_id"]
    assert _keys(iam_server, iam_user) == {
        iam_user.access_key_id: "Active",
        kept["access_key_id"]: "Inactive",
    }
    run.finish()
    assert subject.works(kept) and not subject.works(lost)
