"""``keyturn resolve NAME --retry | --abandon``: the way out of ``needs_attention`` (issue 11,
finding 6), against a real Postgres ledger and the local store, with the CLI in-process."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from rotation.access import audit, roles
from rotation.errors import BackendUnavailable
from rotation.ledger.models import AuditRecord, Run, RunEvent
from rotation.run.states import RunState
from rotation.values import Stage
from tests.integration.test_cli_ops import VALUES, Env, cli, env, sent

__all__ = ["env", "sent"]


def give_up_at(env: Env, secret: str, state: RunState, monkeypatch: pytest.MonkeyPatch) -> int:
    """Drive a run of ``secret`` to ``state``, then make its next step fail until the engine gives
    up with ``needs_attention``, its rollback failing too (the backend is down throughout)."""
    run_id = env.start(secret)
    env.drive(run_id, until=state)
    engine = env.engine()
    provider = engine.runtime.provider(None)

    def down(*args: object, **kwargs: object) -> None:
        raise BackendUnavailable("the backend is down (test)")

    with monkeypatch.context() as patch:
        for method in ("promote", "rollback", "discard_pending", "stage_pending"):
            patch.setattr(provider, method, down)
        for _ in range(20):
            run = env.run(run_id)
            if run.state == RunState.NEEDS_ATTENTION.value:
                break
            with env.runtime.ledger.transaction() as session:  # skip the backoff
                session.execute(update(Run).where(Run.id == run_id).values(next_attempt_at=None))
            engine.advance(run_id, run.state)
    run = env.run(run_id)
    assert run.state == "needs_attention", (run.state, run.last_error)
    return run_id


def test_resolve_retry_resumes_from_the_step_it_stopped_at(
    env: Env, sent: list[tuple[int, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = give_up_at(env, "svc/fast", RunState.TESTED, monkeypatch)
    assert env.store().read("svc/fast").value == VALUES["svc/fast"]  # not promoted

    result = cli("resolve", "svc/fast", "--retry")
    assert result.exit_code == 0, result.output
    run = env.run(run_id)
    assert run.state == "created" and run.attempt == 0 and run.finished_at is None
    assert sent == [(run_id, "created")]
    assert f"run {run_id}" in result.output
    done = env.drive(run_id)
    assert done.state == "succeeded"
    current = env.store().read("svc/fast")
    assert current.token == done.token and current.value != VALUES["svc/fast"]
    assert len(env.store().versions("svc/fast")) == 2  # exactly one new version

    with env.runtime.ledger.sessions() as session:
        resolved = session.scalars(
            select(AuditRecord).where(AuditRecord.action == "run.retry")
        ).all()
        steps = session.scalars(
            select(RunEvent.step).where(RunEvent.run_id == run_id).order_by(RunEvent.id)
        ).all()
    assert [(r.actor, r.outcome, r.run_id) for r in resolved] == [("alice", "ok", run_id)]
    assert "resolve" in steps


def test_resolve_abandon_rolls_back_and_frees_the_secret(
    env: Env, sent: list[tuple[int, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = give_up_at(env, "svc/slow", RunState.TESTED, monkeypatch)
    store = env.store()
    pending = store.read("svc/slow", stage=Stage.PENDING)
    assert pending.token == env.run(run_id).token  # the give-up's rollback left it behind

    result = cli("resolve", "svc/slow", "--abandon", "--retry-after", "2d")
    assert result.exit_code == 0, result.output
    run = env.run(run_id)
    assert run.state == "failed" and "abandoned by alice" in (run.last_error or "")
    assert store.read("svc/slow").value == VALUES["svc/slow"]  # rolled back
    assert not [v for v in store.versions("svc/slow") if Stage.PENDING in v.stages]
    schedule = env.schedule("svc/slow")
    assert schedule.next_due_at is not None
    assert schedule.next_due_at - datetime.now(UTC) > timedelta(days=1)
    assert sent == []
    # the secret's slot is free: a new rotation starts
    assert cli("rotate", "svc/slow").exit_code == 0
    assert len(sent) == 1 and sent[0][0] != run_id


def test_resolve_refuses_what_does_not_need_attention_and_needs_a_choice(env: Env) -> None:
    result = cli("resolve", "svc/fast", "--retry")
    assert result.exit_code == 1
    assert "needs no attention" in result.output and result.output.count("\n") == 1
    assert cli("resolve", "svc/fast").exit_code == 2  # --retry or --abandon
    assert cli("resolve", "svc/fast", "--retry", "--abandon").exit_code == 2


def test_resolve_is_role_checked_and_denials_are_audited(
    env: Env, sent: list[tuple[int, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = give_up_at(env, "svc/fast", RunState.TESTED, monkeypatch)
    monkeypatch.setenv("KEYTURN_AUDIT", "ledger")
    audit.reset_default_sink()
    roles.configure({"alice": "viewer", "olivia": "operator"})
    try:
        denied = cli("resolve", "svc/fast", "--abandon")
        assert denied.exit_code != 0
        assert env.run(run_id).state == "needs_attention"
        monkeypatch.setenv("KEYTURN_OPERATOR_KEY", str(env.schedules.parent / "keys/olivia.key"))
        allowed = cli("resolve", "svc/fast", "--abandon")
        assert allowed.exit_code == 0, allowed.output
    finally:
        roles.reset()
        audit.reset_default_sink()
    with env.runtime.ledger.sessions() as session:
        records = session.execute(
            select(AuditRecord.actor, AuditRecord.action, AuditRecord.outcome).where(
                AuditRecord.action.in_(["permission.denied", "run.abandon"])
            )
        ).all()
    assert ("alice", "permission.denied", "denied") in records
    assert ("olivia", "run.abandon", "ok") in records
    assert env.run(run_id).state == "failed"


def test_two_operators_never_resolve_a_run_at_once(
    env: Env, sent: list[tuple[int, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = give_up_at(env, "svc/fast", RunState.TESTED, monkeypatch)
    engine = env.engine()
    run, owner = engine._take_resolve_lease(run_id, "bob")  # bob is resolving it right now
    result = cli("resolve", "svc/fast", "--abandon")
    assert result.exit_code == 1 and "another operator is resolving it" in result.output
    assert env.run(run_id).state == "needs_attention"
    engine._release(run, owner)
    assert cli("resolve", "svc/fast", "--abandon").exit_code == 0
