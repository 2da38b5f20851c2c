"""The dashboard's pure parts: its authentication decisions and the SVG it draws."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from starlette.datastructures import Headers

from rotation.config import DashboardSettings
from rotation.dashboard.auth import AuthPolicy, parse_users
from rotation.dashboard.charts import heat_level, heatmap_svg, timeline_svg
from rotation.errors import ConfigurationError
from rotation.hosts import is_loopback
from rotation.ops.forecast import Collision, Forecast, Rotation
from rotation.ops.overview import TimelineStep, resolve_commands

T0 = datetime(2026, 1, 5, 3, 0, tzinfo=UTC)


def basic(user: str, password: str) -> Headers:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return Headers({"authorization": f"Basic {token}"})


def test_users_parse_and_errors_never_show_a_password() -> None:
    assert parse_users("ops:pw1, dev:p:w2", "X", ",") == {"ops": "pw1", "dev": "p:w2"}
    with pytest.raises(ConfigurationError) as caught:
        parse_users("ops:secret-pw,broken", "KEYTURN_DASHBOARD_BASIC_AUTH", ",")
    assert "entry 2" in caught.value.message and "secret-pw" not in caught.value.message
    with pytest.raises(ConfigurationError, match="listed twice"):
        parse_users("ops:a,ops:b", "X", ",")


def test_policy_decisions() -> None:
    settings = DashboardSettings(basic_auth="ops:pw")
    policy = AuthPolicy.from_settings(settings, host="0.0.0.0")
    assert policy.authenticate(basic("ops", "pw"), "10.0.0.1") == "ops"
    assert policy.authenticate(basic("ops", "PW"), "10.0.0.1") is None
    assert policy.authenticate(basic("eve", "pw"), "10.0.0.1") is None
    assert policy.authenticate(Headers({"authorization": "Basic %%%"}), None) is None
    proxied = AuthPolicy.from_settings(
        DashboardSettings(proxy_header="X-User", trusted_proxies=("10.0.0.5",)), host="0.0.0.0"
    )
    assert proxied.authenticate(Headers({"x-user": "ann"}), "10.0.0.5") == "ann"
    assert proxied.authenticate(Headers({"x-user": "ann"}), "10.0.0.6") is None
    with pytest.raises(ConfigurationError, match="needs authentication"):
        AuthPolicy.from_settings(DashboardSettings(), host="127.0.0.1")
    with pytest.raises(ConfigurationError, match="loopback"):
        AuthPolicy.from_settings(DashboardSettings(), host="0.0.0.0", insecure=True)
    assert AuthPolicy.from_settings(DashboardSettings(), host="::1", insecure=True).insecure
    assert is_loopback("localhost") and is_loopback("127.0.0.2") and not is_loopback("10.0.0.1")
    with pytest.raises(ConfigurationError, match="header name"):
        DashboardSettings.from_env({"KEYTURN_DASHBOARD_PROXY_HEADER": "X User: a"})


def test_the_timeline_escapes_what_it_draws_and_hatches_waits() -> None:
    steps = [
        TimelineStep(
            "create", T0, T0 + timedelta(seconds=1), "ok", "pending", "created", 1, "w", None, False
        ),
        TimelineStep(
            "retire",
            T0 + timedelta(seconds=1),
            T0 + timedelta(hours=1),
            "ok",
            "restarted",
            "retired",
            1,
            "w",
            "<script>x</script>",
            True,
        ),
    ]
    svg = str(timeline_svg(steps))
    assert svg.count('<g class="bar') == 2 and 'fill="url(#hatch)"' in svg
    assert "<script" not in svg
    assert "No step" in str(timeline_svg([]))


def test_the_heatmap_marks_collision_days_and_levels() -> None:
    rotations = [
        Rotation(T0 + timedelta(days=2, seconds=i), f"db/{i}", "p", "vault") for i in range(2)
    ]
    result = Forecast(
        T0,
        T0 + timedelta(days=14),
        budget=2,
        rotations=rotations,
        collisions=[Collision("vault", tuple(rotations))],
    )
    svg = str(heatmap_svg(result))
    assert 'data-day="2026-01-07" data-count="2" data-collisions="1"' in svg
    assert "collision" in svg.split('data-day="2026-01-07"')[0].rsplit("<g", 1)[1]
    assert svg.count("data-day=") == 15  # both ends of the horizon
    assert [heat_level(n, 10) for n in (0, 1, 4, 9, 10, 50)] == [0, 1, 2, 3, 4, 4]


def test_resolve_commands_quote_the_name() -> None:
    assert resolve_commands("db/app") == (
        "keyturn resolve db/app --retry",
        "keyturn resolve db/app --abandon",
    )
    assert resolve_commands("a b")[0] == "keyturn resolve 'a b' --retry"
