"""The rotator contract (docs/rotators.md, "The contract"): every kind, against its real server.

Each test drives a rotation through the engine's own step bodies and checks the target between
steps: create is idempotent on the run's token; apply twice is apply once; test refuses a
credential the target does not accept; between promote and retire both credentials work when the
kind declares ``dual_valid``; retire leaves the current credential working and, when the kind
``revokes``, the old one refused; undo (the engine's rollback) restores the previous state after
every step before retire, and the next rotation still works. The SIGKILL-at-every-boundary part
of the contract runs through real Celery workers in tests/faults/test_rotator_crashes.py.
"""

from __future__ import annotations

import pytest

from rotation.errors import KeyturnError
from rotation.run.states import RunState
from rotation.values import Stage
from tests.backends.certs import self_signed
from tests.contract.harness import Rotation, Subject


def pending_versions(subject: Subject) -> list[str]:
    return [
        v.version_id for v in subject.provider.versions(subject.secret) if Stage.PENDING in v.stages
    ]


def test_create_is_idempotent_on_the_token(subject: Subject) -> None:
    run = Rotation(subject)
    run.step(again=True)  # create, as if the worker died before committing
    first = run.new_value()
    run.step()  # the redelivered create finds this token's pending value
    assert run.new_value() == first
    assert len(pending_versions(subject)) == 1
    assert len(subject.provider.versions(subject.secret)) == 2
    again = run.step_input().rotator.create(run.context(), subject.current())
    assert again == first  # the rotator itself returns the staged value
    run.finish()
    assert subject.current() == first and subject.works(first)


def test_apply_twice_is_apply_once(subject: Subject) -> None:
    run = Rotation(subject).until(RunState.CREATED)
    run.step(again=True)
    run.step()  # apply, twice
    new = run.new_value()
    assert subject.works(new)
    if subject.capabilities.dual_valid:
        assert subject.works(run.initial)  # the old credential is untouched until retire
    run.finish()
    assert subject.works(new)
    assert subject.current() == new
    assert len(subject.provider.versions(subject.secret)) == 2


def test_test_refuses_a_credential_the_target_does_not_accept(subject: Subject) -> None:
    run = Rotation(subject).until(RunState.CREATED)  # staged, never applied
    if subject.issued_at_create:  # valid once issued: stage a forged one in its place
        assert subject.works(run.new_value())
        subject.provider.discard_pending(subject.secret, token=run.token)
        subject.provider.stage_pending(subject.secret, self_signed(), token=run.token)
    assert not subject.works(run.new_value())
    with pytest.raises(KeyturnError):
        run.step_input().rotator.test(run.context())
    run.rollback()
    assert subject.works(subject.current()) and subject.current() == run.initial


def test_both_credentials_work_between_promote_and_retire(subject: Subject) -> None:
    run = Rotation(subject).until(RunState.RESTARTED)
    new = run.new_value()
    assert subject.current() == new
    assert subject.provider.read(subject.secret, stage=Stage.PREVIOUS).value == run.initial
    assert subject.works(new)
    if subject.capabilities.dual_valid:
        assert subject.works(run.initial)
    else:
        assert not subject.works(run.initial)  # single user: the old one stopped at apply


def test_retire_keeps_the_current_and_revokes_the_old(subject: Subject) -> None:
    run = Rotation(subject).until(RunState.RESTARTED)
    run.step(again=True)
    run.step()  # retire, twice
    new = run.new_value()
    assert subject.works(new)
    if subject.capabilities.revokes:
        assert not subject.works(run.initial)
    run.finish()
    # and again: the retired credential's user or key is ready for the next rotation
    second = Rotation(subject).finish()
    assert subject.works(second.new_value())
    if subject.capabilities.revokes:
        assert not subject.works(new)


@pytest.mark.parametrize(
    "state", [RunState.CREATED, RunState.APPLIED, RunState.TESTED, RunState.PROMOTED]
)
def test_undo_restores_the_previous_state(subject: Subject, state: RunState) -> None:
    run = Rotation(subject).until(state)
    new = run.new_value()
    note = run.rollback()
    run.rollback()  # the rollback (and the rotator's undo) is idempotent too
    assert "rolled back" in note
    assert subject.current() == run.initial
    assert not pending_versions(subject)
    assert subject.works(run.initial)
    kept = subject.keeps_rolled_back if state is RunState.PROMOTED else subject.keeps_discarded
    if not kept:
        assert not subject.works(new)  # only the CURRENT value works again
    after = Rotation(subject).finish()  # the target is fit for the next rotation
    assert subject.works(after.new_value())
    if subject.capabilities.revokes:
        assert not subject.works(run.initial)
