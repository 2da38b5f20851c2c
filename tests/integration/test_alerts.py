"""The monitoring people already run: ``deploy/prometheus/alerts.yaml`` passes ``promtool test
rules`` on synthetic series (each alert fires when it should and stays quiet when it should
not), every alert has a runbook section in docs/operations.md, and every metric an alert or a
Grafana panel queries is one ``keyturn metrics`` serves."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rotation.ledger.db import Ledger
from rotation.ops.metrics import LedgerCollector
from tests.backends.every_state import EveryState

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "alerts.yaml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "alerts.test.yaml"
GRAFANA = REPO / "deploy" / "grafana" / "keyturn.json"
OPERATIONS = REPO / "docs" / "operations.md"
METRIC = re.compile(r"\bkeyturn_[a-z0-9_]+\b")


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip(
            "promtool is missing: scripts/install-test-deps.sh installs Debian's prometheus"
        )
    return found


def _alerts() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_checks_and_unit_tests_pass() -> None:
    promtool = _promtool()
    check = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_promtool_test_fails_when_an_alert_stops_firing(tmp_path: Path) -> None:
    """The unit tests can fail: a rule whose threshold is off by a day is caught."""
    promtool = _promtool()
    broken = RULES.read_text().replace("< 14 * 86400", "< 13 * 86400")
    assert broken != RULES.read_text()
    (tmp_path / "alerts.yaml").write_text(broken)
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    tested = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tested.returncode != 0
    assert "KeyturnCertificateExpiring" in tested.stdout + tested.stderr


def test_every_alert_fires_and_stays_quiet_in_the_unit_tests() -> None:
    cases: dict[str, list[bool]] = {}
    for group in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in group["alert_rule_test"]:
            cases.setdefault(case["alertname"], []).append(bool(case["exp_alerts"]))
    for rule in _alerts():
        seen = cases.get(rule["alert"], [])
        assert True in seen, f"{rule['alert']}: no test where it fires"
        assert False in seen, f"{rule['alert']}: no test where it stays quiet"


def _github_anchors(markdown: str) -> set[str]:
    anchors = set()
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif line.startswith("#") and not fenced:
            title = line.lstrip("#").strip().lower()
            title = re.sub(r"[^\w\- ]", "", title)
            anchors.add(title.replace(" ", "-"))
    return anchors


def test_every_alert_links_a_runbook_that_exists() -> None:
    anchors = _github_anchors(OPERATIONS.read_text())
    for rule in _alerts():
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == "docs/operations.md", url
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in docs/operations.md"
        assert rule["annotations"]["summary"] and rule["labels"]["severity"] in (
            "warning",
            "critical",
        )


def _served(url: str) -> set[str]:
    """Every sample name a scrape of ``url``'s ledger returns (a run in every state)."""
    ledger = Ledger(url)
    try:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(LedgerCollector(ledger))
        text = generate_latest(registry).decode()
    finally:
        ledger.dispose()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_alerts_and_grafana_query_only_served_metrics(every_state: EveryState) -> None:
    served = _served(every_state.url)
    assert {"keyturn_runs_total", "keyturn_step_duration_seconds_bucket"} <= served

    alert_metrics = {m for rule in _alerts() for m in METRIC.findall(rule["expr"])}
    assert alert_metrics <= served, alert_metrics - served
    assert "keyturn_certificate_expiry_seconds" in alert_metrics

    dashboard = json.loads(GRAFANA.read_text())
    queries = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    assert len(queries) >= 10
    for query in queries:
        named = set(METRIC.findall(query))
        assert named, f"a panel queries no Keyturn metric: {query}"
        assert named <= served, f"not served by keyturn metrics: {named - served} in {query}"
    assert "keyturn_certificate_expiry_seconds" in {m for q in queries for m in METRIC.findall(q)}
