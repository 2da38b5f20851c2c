"""The rotation dashboard, served by the real ``keyturn dashboard`` command over a ledger with a
run in every state, looked at in a real headless Chromium (Playwright driving Debian's
``chromium``): pages render, flags are right, a screenshot of each page is kept under
``build/test-artifacts/dashboard/``, no request without credentials gets data, and no value any
secret ever had appears in what was served."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends.every_state import TARGETS, EveryState
from tests.faults.leakscan import Source, scan
from tests.integration.dashboard_server import KEYTURN, REPO, dashboard, fetch

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "build" / "test-artifacts" / "dashboard"
USER, PASSWORD = "ops", "correct-horse-battery-staple"
AUTH = {"KEYTURN_DASHBOARD_BASIC_AUTH": f"{USER}:{PASSWORD}"}
PAGES = ["/", "/runs", "/attention", "/plan", "/static/dashboard.css", "/runs/1", "/nope"]


def _env(state: EveryState, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYTURN_DASHBOARD_")}
    return {**env, "KEYTURN_DATABASE_URL": state.url, **extra}


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.skip("Debian's chromium is not installed (scripts/install-test-deps.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium"),
            args=[
                "--no-sandbox",
                "--headless",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        yield instance
        instance.close()


def test_pages_render_with_the_right_flags_in_a_real_browser(
    every_state: EveryState, browser: object
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    served_html = Source("served pages")
    with dashboard(_env(every_state, **AUTH)) as served:
        context = browser.new_context(  # type: ignore[attr-defined]
            http_credentials={"username": USER, "password": PASSWORD},
            viewport={"width": 1280, "height": 900},
        )
        page = context.new_page()

        def visit(path: str, shot: str) -> None:
            answer = page.goto(served.base + path.lstrip("/"))
            assert answer is not None and answer.status == 200, path
            served_html.add(page.content())
            served_html.add(fetch(served.base + path.lstrip("/"), auth=(USER, PASSWORD)).body)
            page.screenshot(path=str(ARTIFACTS / f"{shot}.png"), full_page=True)

        # --- secrets: one row per scheduled secret, state and flags right ---------------------
        visit("/", "secrets")
        rows = page.locator("#secrets tbody tr")
        assert rows.count() == len(TARGETS)
        for secret, target in TARGETS.items():
            row = page.locator(f'#secrets tr[data-secret="{secret}"]')
            state = row.locator('[data-col="state"] .state').inner_text()
            assert state == (target or "idle"), (secret, state)
            flags = row.locator('[data-col="flags"]').inner_text().strip()
            expected = {
                "svc/needs_attention": "needs attention",
                "svc/overdue": "overdue 2h",
                "svc/stalled": "stalled 1h",
            }.get(secret, "")
            assert flags == expected, (secret, flags)
        paused = page.locator('#secrets tr[data-secret="frozen/paused"]')
        assert "paused" in paused.inner_text()  # due 2h ago, but paused: no overdue flag
        expiring, days = every_state.expiring
        assert (
            page.locator(f'#secrets tr[data-secret="{expiring}"] [data-col="expires"]').inner_text()
            == f"{days} days"
        )
        assert "3 need attention" in page.locator(".summary").inner_text()

        # --- a run's page: every event a bar and a row, resolve commands when stuck -----------
        page.locator('#secrets tr[data-secret="svc/needs_attention"] [data-col="state"] a').click()
        assert page.locator("#run-state").inner_text() == "needs_attention"
        commands = page.locator(".callout .command").all_inner_texts()
        assert commands == [
            "keyturn resolve svc/needs_attention --retry",
            "keyturn resolve svc/needs_attention --abandon",
        ]
        served_html.add(page.content())
        page.screenshot(path=str(ARTIFACTS / "run-needs-attention.png"), full_page=True)

        succeeded = every_state.runs["svc/succeeded"]
        visit(f"/runs/{succeeded}", "run-succeeded")
        steps = page.locator("#steps tbody tr")
        assert [steps.nth(i).get_attribute("data-step") for i in range(steps.count())] == [
            "create",
            "apply",
            "test",
            "promote",
            "restart",
            "retire",
            "finish",
        ]
        assert page.locator("svg.timeline g.bar").count() == 7
        assert page.locator("svg.timeline g.outcome-ok").count() == 7

        visit(f"/runs/{every_state.runs['grace/restarted']}", "run-waiting")
        assert "waiting until" in page.locator("dl.facts").inner_text()
        assert page.locator('#steps tr[data-outcome="wait"]').count() == 1

        failed = every_state.runs["svc/failed"]
        visit(f"/runs/{failed}", "run-failed")
        # its rollback began (promoted -> rolling_back) and ended (rolling_back -> failed)
        assert page.locator('#steps tr[data-outcome="rollback"]').count() == 2
        assert "rolled back by alice" in page.locator("#last-error").inner_text()

        # --- needs attention: stuck first, with the exact commands ----------------------------
        visit("/attention", "attention")
        items = page.locator("ul.attention > li")
        found = [
            (items.nth(i).get_attribute("data-problem"), items.nth(i).get_attribute("data-secret"))
            for i in range(items.count())
        ]
        assert found == [
            ("needs_attention", "svc/needs_attention"),
            ("stalled", "svc/stalled"),
            ("overdue", "svc/overdue"),
        ]
        first = items.nth(0)
        assert first.locator("pre.command").all_inner_texts() == commands
        assert "stopped at apply" in first.inner_text()
        assert "attempts exhausted at step apply" in first.inner_text()

        # --- plan: the calendar marks the day two secrets of one backend collide --------------
        visit("/plan", "plan")
        day = page.locator(f'svg.heatmap g.day[data-day="{every_state.collision_day}"]')
        assert day.get_attribute("class") is not None and "collision" in day.get_attribute("class")
        assert int(day.get_attribute("data-collisions") or 0) >= 1
        assert day.locator("circle.mark").count() == 1
        quiet = page.locator('svg.heatmap g.day[data-count="0"]').first
        assert "collision" not in (quiet.get_attribute("class") or "")
        assert "db/report, db/app_role" in page.locator("#collisions").inner_text()
        visit("/plan?days=7", "plan-7-days")
        assert page.locator("svg.heatmap g.day[data-day]").count() == 7 + 1  # 7 days + today's end

        visit("/runs", "runs")
        assert page.locator("#runs tbody tr").count() == len(every_state.runs)
        context.close()

    for name in ("secrets", "run-needs-attention", "run-succeeded", "attention", "plan", "runs"):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 10_000, name

    # --- the leak scan: no value any secret ever had is in any page served --------------------
    assert len(every_state.needles) > len(TARGETS)  # initial values and every rotated one
    assert served_html.size > 50_000
    assert scan([served_html], every_state.needles) == {}


def test_no_request_without_credentials_gets_data(every_state: EveryState) -> None:
    run_id = every_state.runs["svc/needs_attention"]
    paths = [*PAGES, f"/runs/{run_id}", "/plan?days=30", "/runs?secret=svc/failed"]
    with dashboard(_env(every_state, **AUTH)) as served:
        base = served.base.rstrip("/")
        refusals = {
            "no credentials": None,
            "wrong password": (USER, "wrong-password"),
            "unknown user": ("mallory", PASSWORD),
            "empty password": (USER, ""),
        }
        for path in paths:
            for why, auth in refusals.items():
                answer = fetch(base + path, auth=auth)
                assert answer.status == 401, (path, why, answer.status)
                assert answer.body == "authentication required\n", (path, why)
                assert answer.headers["www-authenticate"].startswith("Basic realm=")
                assert answer.headers["cache-control"] == "no-store"
            for header in ("Bearer abc", "Basic !!!", "Basic " + "b3Bz"):  # b3Bz: 'ops', no colon
                answer = fetch(base + path, headers={"Authorization": header})
                assert answer.status == 401 and answer.body == "authentication required\n"
        assert fetch(base + "/healthz").body == "ok\n"  # open, and says nothing else

        page = fetch(base + "/", auth=(USER, PASSWORD))
        assert page.status == 200 and "svc/needs_attention" in page.body
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script" not in page.body.lower().replace(
            "noscript", ""
        )
        assert page.headers["x-frame-options"] == "DENY"
        for method in ("POST", "PUT", "DELETE", "PATCH"):  # read-only, even when authenticated
            assert fetch(base + "/", auth=(USER, PASSWORD), method=method).status == 405
            assert fetch(base + "/", method=method).status == 401


def test_a_trusted_proxy_header_authenticates_only_from_a_trusted_address(
    every_state: EveryState,
) -> None:
    header = {"X-Forwarded-User": "alice@example.org"}
    with dashboard(_env(every_state), "--proxy-header", "X-Forwarded-User") as served:
        assert "X-Forwarded-User from 127.0.0.1" in served.banner
        assert fetch(served.base).status == 401
        answer = fetch(served.base, headers=header)
        assert answer.status == 200 and "alice@example.org" in answer.body
        assert fetch(served.base, headers={"X-Forwarded-User": "  "}).status == 401
    untrusted = _env(every_state, KEYTURN_DASHBOARD_TRUSTED_PROXIES="10.1.2.3")
    with dashboard(untrusted, "--proxy-header", "X-Forwarded-User") as served:
        assert fetch(served.base, headers=header).status == 401  # 127.0.0.1 is not the proxy


def test_refuses_to_start_without_authentication(every_state: EveryState, tmp_path: Path) -> None:
    def start(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*KEYTURN, "dashboard", "--port", "0", *args],
            env=_env(every_state, **extra),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )

    nothing = start()
    assert nothing.returncode == 2 and "needs authentication" in nothing.stderr
    exposed = start("--insecure-no-auth", "--host", "0.0.0.0")
    assert exposed.returncode == 2 and "loopback" in exposed.stderr

    users = tmp_path / "dashboard-users"
    users.write_text(f"# who may look\n{USER}:{PASSWORD}\n")
    users.chmod(0o644)
    loose = start("--auth-file", str(users))
    assert loose.returncode == 2 and "chmod 600" in loose.stderr
    assert PASSWORD not in loose.stderr
    users.write_text(f"{USER}\n")
    users.chmod(0o600)
    broken = start("--auth-file", str(users))
    assert broken.returncode == 2 and "entry 1 is not user:password" in broken.stderr

    users.write_text(f"{USER}:{PASSWORD}\n")
    with dashboard(_env(every_state), "--auth-file", str(users)) as served:
        port = served.base.rsplit(":", 1)[1].strip("/")
        taken = subprocess.run(
            [*KEYTURN, "dashboard", "--port", port, "--auth-file", str(users)],
            env=_env(every_state),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert taken.returncode == 2 and f"Cannot listen on 127.0.0.1:{port}" in taken.stderr
        assert fetch(served.base).status == 401
        assert fetch(served.base, auth=(USER, PASSWORD)).status == 200
    with dashboard(_env(every_state), "--insecure-no-auth") as served:
        assert "NO AUTHENTICATION" in served.banner
        assert fetch(served.base).status == 200


def test_an_unreachable_ledger_is_a_503_without_the_password(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "KEYTURN_DATABASE_URL": "postgresql://keyturn:hunter2-secret@127.0.0.1:9/keyturn",
        **AUTH,
    }
    with dashboard(env) as served:
        answer = fetch(served.base, auth=(USER, PASSWORD))
        assert answer.status == 503
        assert (
            "Cannot read the ledger at postgresql+psycopg://keyturn:***@127.0.0.1:9/keyturn"
            in answer.body
        )
        assert "hunter2" not in answer.body and "hunter2" not in served.banner
