"""Steps bounded in time (issue 11, finding 1): the policy loader refuses a restart whose worst
case exceeds the step budget, naming the field; Celery's time limits derive from the lease."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rotation.errors import PolicyFileError
from rotation.policy import load_policy_text

POLICY = """
name: web
secret: svc/key
kind: random
schedule: {{every: 30d}}
restart: {restart}
"""


def errors_of(restart: str) -> list[str]:
    try:
        load_policy_text(POLICY.format(restart=restart), "web.yaml")
    except PolicyFileError as exc:
        return [str(e) for e in exc.errors]
    return []


@pytest.fixture(autouse=True)
def default_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEYTURN_LEASE_SECONDS", raising=False)


def test_ten_four_minute_commands_are_refused_naming_the_field() -> None:
    commands = ", ".join(f"[sh, -c, 'exit {i}']" for i in range(10))
    errors = errors_of(f"{{strategy: command, timeout: 4m, commands: [{commands}]}}")
    assert len(errors) == 1, errors
    (error,) = errors
    assert error.startswith("web.yaml:6: restart.timeout:"), error
    assert "40m" in error and "4m" in error and "KEYTURN_LEASE_SECONDS" in error


def test_a_restart_within_the_budget_is_accepted() -> None:
    # two commands of the default 2m: 4m, the budget under the default 5-minute lease
    assert errors_of("{strategy: command, commands: [[kubectl, a], [kubectl, b]]}") == []


def test_each_wave_has_its_own_budget() -> None:
    ok = (
        "{strategy: waves, waves: [{strategy: command, timeout: 3m, commands: [[a]]}, "
        "{strategy: command, timeout: 3m, commands: [[b]]}]}"
    )
    assert errors_of(ok) == []  # 6m in all, but each wave is its own step
    too_long = "{strategy: waves, waves: [{strategy: command, timeout: 3m, commands: [[a], [b]]}]}"
    (error,) = errors_of(too_long)
    assert "restart.waves[0].timeout" in error and "6m" in error


def test_the_budget_follows_the_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYTURN_LEASE_SECONDS", "60")
    (error,) = errors_of("{strategy: webhook, url: 'https://h/x', hmac_secret: k, timeout: 1m}")
    assert "restart.timeout" in error and "48s" in error
    assert errors_of("{strategy: webhook, url: 'https://h/x', hmac_secret: k}") == []


def test_celery_time_limits_derive_from_the_lease() -> None:
    script = "from worker.tasks import advance; print(advance.soft_time_limit, advance.time_limit)"
    for lease in ("300", "4"):
        out = subprocess.run(
            [sys.executable, "-c", script],
            env={"KEYTURN_LEASE_SECONDS": lease, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        soft, hard = (float(x) if x != "None" else None for x in out)
        lease_s = float(lease)
        assert soft is not None and hard is not None, out
        assert 0.8 * lease_s < soft < hard < lease_s, (lease, soft, hard)
