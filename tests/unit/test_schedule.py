"""Due-ness with fixed datetimes: intervals, cron, windows, jitter. 2024-01-01 is a Monday."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rotation.policy import Policy
from rotation.policy.due import in_window, is_due, jitter_for, next_due, next_window_start


def policy(**overrides: object) -> Policy:
    base = {"name": "p", "secrets": ["s*"], "kind": "random", "schedule": {"every": "30d"}}
    return Policy.model_validate({**base, **overrides})


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


NOW = utc(2024, 3, 1, 12, 0)


def test_never_rotated_is_due_now() -> None:
    assert next_due(policy(), "s1", None, NOW) == NOW
    assert next_due(policy(jitter="1h"), "s1", None, NOW) == NOW
    assert is_due(policy(), "s1", None, NOW)


def test_thirty_day_interval() -> None:
    last = utc(2024, 1, 10, 8, 30)
    assert next_due(policy(), "s1", last, NOW) == utc(2024, 2, 9, 8, 30)
    assert is_due(policy(), "s1", last, NOW)
    assert not is_due(policy(), "s1", utc(2024, 2, 20), NOW)


def test_weekly_cron() -> None:
    weekly = policy(schedule={"cron": "0 3 * * 0"})  # Sundays 03:00
    assert next_due(weekly, "s1", utc(2024, 1, 1, 9), NOW) == utc(2024, 1, 7, 3)
    # exactly at a firing: the next one, a week later
    assert next_due(weekly, "s1", utc(2024, 1, 7, 3), NOW) == utc(2024, 1, 14, 3)
    assert weekly.interval is None


def test_overnight_window() -> None:
    p = policy(window={"start": "22:00", "end": "02:00"})
    assert in_window(p, utc(2024, 1, 1, 22, 0))
    assert in_window(p, utc(2024, 1, 1, 23, 59))
    assert in_window(p, utc(2024, 1, 2, 1, 59))
    assert not in_window(p, utc(2024, 1, 2, 2, 0))  # end is exclusive
    assert not in_window(p, utc(2024, 1, 2, 12, 0))
    assert next_window_start(p, utc(2024, 1, 2, 12, 0)) == utc(2024, 1, 2, 22, 0)
    # due at noon -> moved to 22:00 the same day
    assert next_due(p, "s1", utc(2024, 1, 1, 12), NOW) == utc(2024, 1, 31, 22, 0)


def test_day_of_week_window() -> None:
    p = policy(
        window={"days": ["mon", "tue", "wed", "thu", "fri"], "start": "02:00", "end": "05:00"}
    )
    saturday = utc(2024, 1, 6, 3, 0)
    assert not in_window(p, saturday)
    assert next_window_start(p, saturday) == utc(2024, 1, 8, 2, 0)  # Monday 02:00
    assert in_window(p, utc(2024, 1, 8, 4, 59))
    assert next_window_start(p, utc(2024, 1, 8, 5, 0)) == utc(2024, 1, 9, 2, 0)


def test_overnight_window_belongs_to_its_opening_day() -> None:
    friday_night = policy(window={"days": ["fri"], "start": "22:00", "end": "02:00"})
    assert in_window(friday_night, utc(2024, 1, 6, 1, 0))  # Saturday 01:00: Friday's window
    assert not in_window(friday_night, utc(2024, 1, 5, 1, 0))  # Friday 01:00: Thursday's
    assert next_window_start(friday_night, utc(2024, 1, 6, 3, 0)) == utc(2024, 1, 12, 22, 0)


def test_all_day_window_on_days() -> None:
    weekend = policy(window={"days": ["sat", "sun"]})
    assert in_window(weekend, utc(2024, 1, 6, 0, 0)) and in_window(weekend, utc(2024, 1, 7, 23, 59))
    assert next_window_start(weekend, utc(2024, 1, 8, 9)) == utc(2024, 1, 13, 0, 0)


def test_no_window_is_always_open() -> None:
    assert in_window(policy(), NOW) and next_window_start(policy(), NOW) == NOW


def test_outside_window_is_not_due() -> None:
    p = policy(window={"start": "02:00", "end": "05:00"})
    last = utc(2024, 1, 1, 3)
    assert next_due(p, "s1", last, NOW) == utc(2024, 1, 31, 3)
    assert not is_due(p, "s1", last, NOW)  # noon: overdue but the window is closed
    assert is_due(p, "s1", last, utc(2024, 3, 2, 2, 30))


def test_paused_is_never_due() -> None:
    assert not is_due(policy(paused=True), "s1", None, NOW)


def test_jitter_bounds_and_determinism() -> None:
    p = policy(jitter="1h")
    last = utc(2024, 1, 1, 3)
    offsets = {jitter_for(p, f"s{i}", last) for i in range(200)}
    assert all(timedelta(0) <= o < timedelta(hours=1) for o in offsets)
    assert len(offsets) > 190  # spread, not clumped
    assert next_due(p, "s1", last, NOW) == next_due(p, "s1", last, NOW + timedelta(days=3))
    assert next_due(p, "s1", last, NOW) == utc(2024, 1, 31, 3) + jitter_for(p, "s1", last)
    # a new rotation gives a new draw
    assert jitter_for(p, "s1", last) != jitter_for(p, "s1", last + timedelta(days=30))
    assert jitter_for(policy(), "s1", last) == timedelta(0)


def test_jitter_ignores_the_timezone_it_is_given_in() -> None:
    p = policy(jitter="1h")
    last = utc(2024, 1, 1, 3)
    paris = last.astimezone(timezone(timedelta(hours=1)))
    assert jitter_for(p, "s1", paris) == jitter_for(p, "s1", last)
    assert next_due(p, "s1", paris, NOW) == next_due(p, "s1", last, NOW)
    assert next_due(p, "s1", paris, NOW).tzinfo == UTC


def test_dst_is_irrelevant() -> None:
    # Across Europe's and America's 2024 DST switches an interval is still exact UTC hours.
    p = policy(schedule={"every": "1d"})
    for last in [utc(2024, 3, 30, 1, 30), utc(2024, 3, 9, 7, 0), utc(2024, 10, 26, 23, 0)]:
        assert next_due(p, "s1", last, NOW) - last == timedelta(hours=24)
    daily = policy(schedule={"cron": "0 2 * * *"})
    assert next_due(daily, "s1", utc(2024, 3, 31, 2), NOW) == utc(2024, 4, 1, 2)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_due(policy(), "s1", None, datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        in_window(policy(), datetime(2024, 1, 1))


WINDOWS = [
    None,
    {"start": "02:00", "end": "05:00"},
    {"start": "22:00", "end": "02:00"},
    {"days": ["sat"], "start": "23:30", "end": "00:15"},
    {"days": ["mon", "wed", "fri"]},
    {"days": ["sun"], "start": "00:00", "end": "23:59"},
]
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@given(window=st.sampled_from(WINDOWS), at=moments)
def test_window_moves_forward_never_backward(
    window: dict[str, object] | None, at: datetime
) -> None:
    p = policy(window=window)
    start = next_window_start(p, at)
    assert at <= start < at + timedelta(days=8)
    assert in_window(p, start)
    assert in_window(p, at) == (start == at)


@given(
    window=st.sampled_from(WINDOWS),
    last=moments,
    jitter=st.sampled_from(["0s", "1s", "1h", "29d"]),
    secret=st.text(max_size=10),
)
def test_due_is_never_before_interval(
    window: dict[str, object] | None, last: datetime, jitter: str, secret: str
) -> None:
    p = policy(window=window, jitter=jitter)
    due = next_due(p, secret, last, NOW)
    assert due >= last + timedelta(days=30)
    assert in_window(p, due)
    unwindowed = last + timedelta(days=30) + jitter_for(p, secret, last)
    assert due == next_window_start(p, unwindowed)
