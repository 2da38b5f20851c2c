"""The rotation forecast with fixed datetimes: due times, windows, collisions, budget.
2024-03-01 is a Friday."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from rotation.ops.forecast import (
    MAX_PER_SECRET,
    Rotation,
    Scheduled,
    find_collisions,
    forecast,
    rotations_of,
)
from rotation.policy import Policy

START = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def policy(name: str = "p", **overrides: object) -> Policy:
    base = {"name": name, "secrets": ["s*"], "kind": "random", "schedule": {"every": "30d"}}
    return Policy.model_validate({**base, **overrides})


def item(secret: str, p: Policy | None = None, provider: str = "vault", **kw: object) -> Scheduled:
    return Scheduled(secret, p or policy(), provider, **kw)  # type: ignore[arg-type]


def times(rotations: list[Rotation]) -> list[datetime]:
    return [r.at for r in rotations]


def test_never_rotated_is_due_at_start_then_every_interval_after_the_run() -> None:
    p = policy(retire_after="1h")
    found, cut = rotations_of(item("s1", p), START, START + timedelta(days=90))
    assert not cut
    # the next due time counts from the run's end: start + retire_after
    assert times(found) == [
        START,
        START + timedelta(days=30, hours=1),
        START + timedelta(days=60, hours=2),
    ]


def test_ledger_due_time_wins_and_overdue_starts_at_once() -> None:
    later = START + timedelta(days=10)
    found, _ = rotations_of(item("s1", next_due_at=later), START, START + timedelta(days=20))
    assert times(found) == [later]
    overdue = START - timedelta(days=3)
    found, _ = rotations_of(item("s1", next_due_at=overdue), START, START + timedelta(days=20))
    assert times(found) == [START]


def test_last_rotated_without_due_time_and_busy_secret() -> None:
    last = START - timedelta(days=25)
    found, _ = rotations_of(item("s1", last_rotated_at=last), START, START + timedelta(days=10))
    assert times(found) == [last + timedelta(days=30)]
    # a run is rotating it now: the next rotation is an interval from now
    found, _ = rotations_of(item("s1", busy=True), START, START + timedelta(days=40))
    assert times(found) == [START + timedelta(days=30)]


def test_windows_are_respected() -> None:
    p = policy(
        window={"days": ["mon", "tue"], "start": "02:00", "end": "05:00"}, schedule={"every": "1d"}
    )
    found, _ = rotations_of(item("s1", p), START, START + timedelta(days=14))
    assert found, "a weekly window opens twice a week"
    for rotation in found:
        assert rotation.at.strftime("%a") in ("Mon", "Tue")
        assert 2 <= rotation.at.hour < 5
    assert found[0].at == datetime(2024, 3, 4, 2, 0, tzinfo=UTC)  # Friday -> Monday 02:00


def test_paused_policies_never_rotate() -> None:
    found, _ = rotations_of(item("s1", policy(paused=True)), START, START + timedelta(days=90))
    assert found == []


def test_collision_of_two_secrets_meant_to_rotate_apart() -> None:
    """Vault #18738: two roles with different schedules end up due seconds apart."""
    monthly = policy("monthly-role")
    quarterly = policy("quarterly-role", schedule={"every": "90d"})
    result = forecast(
        [
            item("db/role_a", monthly, next_due_at=START + timedelta(days=5)),
            item("db/role_b", quarterly, next_due_at=START + timedelta(days=5, seconds=40)),
            item("db/elsewhere", quarterly, provider="aws", next_due_at=START + timedelta(days=5)),
        ],
        START,
        30,
    )
    assert len(result.collisions) == 1
    (collision,) = result.collisions
    assert collision.provider == "vault"
    assert collision.secrets == ("db/role_a", "db/role_b")
    assert collision.span == timedelta(seconds=40)
    assert result.flagged
    day = next(d for d in result.days() if d.day == date(2024, 3, 6))
    assert day.collisions == 1 and day.by_provider == {"aws": 1, "vault": 2}


def test_collisions_chain_within_the_gap_and_ignore_one_secret_alone() -> None:
    def at(minutes: int, secret: str, provider: str = "vault") -> Rotation:
        return Rotation(START + timedelta(minutes=minutes), secret, "p", provider)

    rotations = [at(0, "a"), at(9, "b"), at(18, "c"), at(40, "d"), at(100, "e"), at(105, "e")]
    (chain,) = find_collisions(rotations)
    assert chain.secrets == ("a", "b", "c")
    assert find_collisions([at(0, "a"), at(10, "b")])  # exactly the gap: within
    assert not find_collisions([at(0, "a"), at(11, "b")])
    assert not find_collisions([at(0, "a"), at(1, "b", provider="aws")])
    assert len(find_collisions([at(0, "a"), at(11, "b")], gap=timedelta(minutes=15))) == 1


def test_days_over_budget_are_flagged() -> None:
    p = policy(schedule={"every": "90d"})
    items = [item(f"s{i}", p, next_due_at=START + timedelta(hours=i)) for i in range(3)]
    items.append(item("s9", p, next_due_at=START + timedelta(days=2)))
    result = forecast(items, START, 30, budget=2, gap=timedelta(0))
    assert [d.day for d in result.over_budget] == [date(2024, 3, 1)]
    assert [len(d.rotations) for d in result.days()] == [3, 1]  # only days with rotations
    assert result.collisions == []
    assert result.flagged
    assert not forecast(items, START, 30, budget=3, gap=timedelta(0)).flagged


def test_runaway_schedules_are_cut() -> None:
    fast = policy(schedule={"every": "1s"})
    result = forecast([item("s1", fast)], START, 1)
    assert len(result.rotations) == MAX_PER_SECRET
    assert result.truncated == ["s1"]


def test_forecast_needs_a_day() -> None:
    with pytest.raises(ValueError):
        forecast([], START, 0)
