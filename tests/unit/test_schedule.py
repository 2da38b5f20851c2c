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


# --- renew_before (kinds whose credentials expire) --------------------------------------------


def cert_policy(schedule: dict[str, str], **overrides: object) -> Policy:
    target = {"issuer": "internal", "ca_secret": "pki/ca"}
    return policy(kind="certificate", schedule=schedule, target=target, **overrides)


def test_renew_before_is_due_ahead_of_the_expiry() -> None:
    p = cert_policy({"renew_before": "30d"})
    last, expires = utc(2024, 1, 1), utc(2024, 4, 1)
    assert next_due(p, "s1", last, NOW, expires) == utc(2024, 3, 2)
    assert p.schedule.describe() == "30d before expiry"


def test_renew_before_beside_every_takes_the_first() -> None:
    p = cert_policy({"every": "120d", "renew_before": "30d"})
    last = utc(2024, 1, 1)
    assert next_due(p, "s1", last, NOW, utc(2024, 12, 1)) == utc(2024, 4, 30)  # every 120d
    assert next_due(p, "s1", last, NOW, utc(2024, 4, 15)) == utc(2024, 3, 16)  # expiry first
    assert next_due(p, "s1", last, NOW, None) == utc(2024, 4, 30)  # unknown: the interval
    assert p.schedule.describe() == "every 120d or 30d before expiry"


def test_renew_before_never_rotated_waits_for_its_renewal() -> None:
    p = cert_policy({"renew_before": "30d"})
    assert next_due(p, "s1", None, NOW, utc(2024, 6, 1)) == utc(2024, 5, 2)
    assert next_due(p, "s1", None, NOW, utc(2024, 3, 10)) == utc(2024, 2, 9)  # overdue: now
    assert next_due(p, "s1", None, NOW, None) == NOW  # unknown expiry: due
    both = cert_policy({"every": "60d", "renew_before": "30d"})
    assert next_due(both, "s1", None, NOW, utc(2024, 6, 1)) == NOW  # every: at once


def test_a_credential_shorter_lived_than_renew_before_renews_at_two_thirds() -> None:
    p = cert_policy({"renew_before": "30d"})
    last = utc(2024, 3, 1)
    assert next_due(p, "s1", last, NOW, utc(2024, 3, 4)) == utc(2024, 3, 3)  # 3d life: day 2
    assert next_due(p, "s1", last, NOW, None) == last  # unknown: due (the dispatcher reads it)


def test_renew_before_jitter_and_window() -> None:
    p = cert_policy({"renew_before": "30d"}, jitter="1h", window={"start": "02:00", "end": "04:00"})
    due = next_due(p, "s1", utc(2024, 1, 1), NOW, utc(2024, 4, 1, 12))
    assert utc(2024, 3, 3, 2) <= due < utc(2024, 3, 3, 4)
    with pytest.raises(ValueError, match="jitter 30d must be less"):
        cert_policy({"renew_before": "30d"}, jitter="30d")


def test_renew_before_needs_an_expiring_kind_and_a_positive_duration() -> None:
    with pytest.raises(ValueError, match="renew_before needs a kind whose credentials expire"):
        policy(schedule={"renew_before": "30d"})
    with pytest.raises(ValueError, match="longer than 0s"):
        cert_policy({"renew_before": "0s"})


def test_a_policy_without_renew_before_keeps_its_spec_hash() -> None:
    # renew_before unset leaves the stored spec (and so the hash) as it was before it existed
    p = Policy.model_validate(
        {"name": "p", "secret": "s", "kind": "random", "schedule": {"every": "30d"}}
    )
    assert p.to_spec()["schedule"] == {"every": 2592000, "cron": None}
    renewing = cert_policy({"renew_before": "30d"})
    assert Policy.model_validate(renewing.to_spec()).spec_hash == renewing.spec_hash
