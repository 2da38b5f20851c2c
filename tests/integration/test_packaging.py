"""Installing the project prints no deprecation warning of its own (``project.license`` was a
TOML table), and the built wheel carries the dashboard's templates and stylesheet."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_building_the_wheel_warns_of_nothing_and_ships_the_templates(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    if done.returncode != 0 and "setuptools" in output and "satisf" in output:
        pytest.skip("the package index is unreachable: pip cannot fetch the build backend")
    assert done.returncode == 0, output
    ours = [line for line in output.splitlines() if "deprecat" in line.lower()]
    assert not ours, "\n".join(ours)
    (wheel,) = tmp_path.glob("keyturn-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "rotation/dashboard/templates/secrets.html" in names
    assert "rotation/dashboard/static/dashboard.css" in names
    metadata = next(n for n in names if n.endswith("METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "License-Expression: Apache-2.0" in text
