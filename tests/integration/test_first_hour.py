"""The first hour of a new user: after ``make run`` (``keyturn run``), the everyday commands in
the same checkout see the demo's ledger and store without any variable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KEYTURN = [sys.executable, "-c", "from rotation.cli import main; main()"]


def _clean_env() -> dict[str, str]:
    """The environment of a newcomer's shell: none of Keyturn's or a backend's variables."""
    prefixes = ("KEYTURN_", "SECRETS_", "VAULT_", "AWS_", "AZURE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def keyturn(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KEYTURN, *args],
        cwd=cwd,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_status_runs_history_and_plan_see_the_demo_after_make_run(tmp_path: Path) -> None:
    demo = keyturn(
        tmp_path,
        "run",
        "--seconds",
        "25",
        "--schedules",
        str(REPO / "schedules" / "demo"),
        timeout=120,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "succeeded" in demo.stdout or "retired" in demo.stdout, demo.stdout

    status = keyturn(tmp_path, "status", "--json")
    assert status.returncode in (0, 2), status.stderr
    rows = {row["secret"]: row for row in json.loads(status.stdout)}
    assert {"demo/api_key_ncbi", "demo/api_key_openfda", "demo/oauth_token"} <= set(rows)
    assert any(row["last_rotated_at"] for row in rows.values())

    runs = keyturn(tmp_path, "runs", "--json")
    assert runs.returncode == 0, runs.stderr
    assert any(run["state"] == "succeeded" for run in json.loads(runs.stdout))

    history = keyturn(tmp_path, "history", "demo/oauth_token", "--json")
    assert history.returncode == 0, history.stderr
    data = json.loads(history.stdout)
    assert len(data["versions"]) >= 2 and data["runs"]  # the store and the ledger of the demo

    plan = keyturn(tmp_path, "plan", "--days", "1", "--json")
    assert plan.returncode == 0, plan.stderr
    assert {r["secret"] for r in json.loads(plan.stdout)["rotations"]} >= {"demo/oauth_token"}

    secrets = keyturn(tmp_path, "secrets", "list")
    assert secrets.returncode == 0 and "demo/oauth_token" in secrets.stdout
