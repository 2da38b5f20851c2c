"""A third-party rotator kind, installed as a distribution (tests/plugins/keyturn_file_rotator,
entry point ``keyturn.rotators: file-token``) into a directory on the processes' PYTHONPATH:
``keyturn policies check`` validates its target, and real Celery workers rotate with it. The
test's own environment (the venv) is never changed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rotation.ledger.db import Ledger
from tests.backends.cluster import REPO, Cluster, runs, store, wait_for

PLUGIN = REPO / "tests" / "plugins" / "keyturn_file_rotator"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The distribution built and installed (``pip install --target``) into a temp directory."""
    work = tmp_path_factory.mktemp("plugin")
    source = work / "src"
    shutil.copytree(PLUGIN, source)  # build artifacts stay out of the repository
    target = work / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert list(target.glob("keyturn_file_rotator-*.dist-info"))
    return target


def keyturn(*args: str, pythonpath: Path | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    keyturn_bin = Path(sys.executable).parent / "keyturn"
    return subprocess.run(
        [str(keyturn_bin), *args], env=env, capture_output=True, text=True, timeout=60
    )


POLICY = """\
policies:
  - name: tokens
    secret: svc/token
    kind: file-token
    schedule: {{every: 30d}}
    consumer_cache_ttl: 0s   # no consumer caches it here (the defaults rule)
    target:
      {field}: {path}
"""


def test_policies_check_validates_the_plugins_target(plugin_path: Path, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(POLICY.format(field="path", path=tmp_path / "tokens.json"))
    bad.write_text(POLICY.format(field="pth", path="x"))
    ok = keyturn("policies", "check", str(good), pythonpath=plugin_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "file-token" in ok.stdout and "1 policy OK" in ok.stdout
    refused = keyturn("policies", "check", str(bad), pythonpath=plugin_path)
    assert refused.returncode == 1
    assert f"{bad}:8: policies[0].target.pth: unknown field 'pth'; did you mean 'path'?" in (
        refused.stdout
    )
    # without the distribution on the path the kind does not exist
    missing = keyturn("policies", "check", str(good), pythonpath=None)
    assert missing.returncode == 1 and "unknown kind 'file-token'" in missing.stdout


def test_celery_workers_rotate_with_the_plugin_kind(
    plugin_path: Path, cluster: Cluster, ledger: Ledger, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": ["first-token-value"]}))
    backend = store(cluster)
    backend.write("svc/token", "first-token-value")
    schedules = Path(cluster.env["KEYTURN_SCHEDULES"])
    (schedules / "tokens.yaml").write_text(
        textwrap.dedent(POLICY.format(field="path", path=tokens))
    )
    cluster.env["PYTHONPATH"] = str(plugin_path)
    cluster.start("worker")
    cluster.start("beat")
    wait_for(
        lambda: runs(ledger) and runs(ledger)[0].state in ("succeeded", "failed"),
        60,
        cluster,
        "the file-token run to finish",
    )
    (run,) = runs(ledger)
    assert run.state == "succeeded", run.last_error
    current = backend.read("svc/token")
    assert current.token == run.token and current.value != "first-token-value"
    assert json.loads(tokens.read_text()) == {"tokens": [current.value]}  # old one retired
