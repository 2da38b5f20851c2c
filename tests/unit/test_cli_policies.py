"""``keyturn policies check``: one line per error, a summary, meaningful exit statuses."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from rotation.cli import main

REPO = Path(__file__).resolve().parents[2]


def check(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["policies", "check", *args])
    return result.exit_code, result.stdout, result.stderr


def test_shipped_schedules_pass() -> None:
    code, out, _ = check(str(REPO / "schedules"))
    assert code == 0, out
    assert "2 policies OK" in out
    for cell in ["api-keys", "db-credentials", "api_key_*", "random", "postgres", "every 30d"]:
        assert cell in out


def test_default_path_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.yaml").write_text("{name: a, secret: x, kind: random, schedule: {every: 1d}}")
    monkeypatch.setenv("KEYTURN_SCHEDULES", str(tmp_path))
    code, out, _ = check()
    assert code == 0 and "1 policy OK" in out


def test_default_path_is_schedules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEYTURN_SCHEDULES", raising=False)
    monkeypatch.chdir(tmp_path)
    code, _, err = check()
    assert code == 2
    assert err.strip() == "error: no such file or directory: schedules"


def test_errors_one_line_each_and_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        textwrap.dedent(
            """\
            policies:
              - name: a
                secrets: [x]
                kind: random
                schedule: {every: 30x}
                jitter: 1y
            """
        )
    )
    (tmp_path / "good.yaml").write_text("{name: g, secret: y, kind: random, schedule: {every: 1d}}")
    code, out, _ = check(str(tmp_path))
    assert code == 1
    lines = out.splitlines()
    assert lines[:2] == [
        f"{bad}:5: policies[0].schedule.every: invalid duration '30x': use 10s, 15m, 12h, 30d, 2w",
        f"{bad}:6: policies[0].jitter: invalid duration '1y': use 10s, 15m, 12h, 30d, 2w",
    ]
    assert lines[2] == "2 errors in 1 file (1 valid policy in 1 other file)"
    assert len(lines) == 3


def test_yaml_syntax_error_has_its_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: a\nsecrets: [x\nkind: random\n")
    code, out, _ = check(str(path))
    assert code == 1
    assert out.splitlines()[0].startswith(f"{path}:3: invalid YAML")


def test_missing_path_exit_2(tmp_path: Path) -> None:
    code, out, err = check(str(tmp_path / "nope"))
    assert code == 2
    assert err.strip() == f"error: no such file or directory: {tmp_path / 'nope'}"
    assert out == ""


def test_empty_directory_is_ok(tmp_path: Path) -> None:
    code, out, _ = check(str(tmp_path))
    assert code == 0 and "0 policies OK" in out


def test_glob_brackets_are_not_rich_markup(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("{name: a, secrets: ['tok[bold]*'], kind: random, schedule: {every: 1d}}")
    code, out, _ = check(str(path))
    assert code == 0 and "tok[bold]*" in out


def test_table_shows_provider_window_and_paused(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "{name: vaulted, secret: x, kind: random, provider: vault, paused: true,"
        " schedule: {cron: '0 3 * * 0'}, window: {days: [sat, sun], start: '22:00', end: '02:00'}}"
    )
    code, out, _ = check(str(tmp_path))
    assert code == 0, out
    for cell in ["vaulted (paused)", "vault", "cron 0 3 * * 0", "sat,sun 22:00-02:00"]:
        assert cell in out
