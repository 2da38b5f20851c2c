"""A real Flower (``celery -A worker flower``) with basic auth in front of real worker and beat
processes (the ``cluster`` fixture): a rotation triggered through Flower's HTTP API, no API
without credentials, and no secret value anywhere in what Flower shows."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from rotation.ledger.db import Ledger
from rotation.ledger.models import Schedule
from rotation.run.runtime import Runtime
from rotation.scheduler.dispatcher import Dispatcher
from rotation.values import decode_value
from tests.backends.cluster import REPO, Cluster, runs, store, wait_for

USER, PASSWORD = "ops", "flower-pass-3c9e"
AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

POLICY = """
policies:
  - name: fast-keys
    secret: svc/api_key
    kind: random
    schedule: {every: 30d}
    retire_after: 1s
    max_attempts: 5
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Flower:
    """HTTP calls to a Flower on 127.0.0.1:port."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def call(
        self, method: str, path: str, *, auth: str | None = AUTH, body: object = None
    ) -> tuple[int, str]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if auth is not None:
            request.add_header("Authorization", auth)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def answers(self) -> bool:
        try:
            return self.call("GET", "/healthcheck", auth=None) == (200, "OK")
        except OSError:
            return False


def start_flower(cluster: Cluster, args: list[str], extra_env: dict[str, str]) -> Flower:
    """``celery -A worker flower`` on a free port, killed with the cluster."""
    port = free_port()
    env = {k: v for k, v in cluster.env.items() if not k.startswith("FLOWER_")}
    log = open(cluster.workdir / f"flower-{port}.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker",
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
            *args,
        ],
        env={**env, **extra_env},
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    cluster.procs.append(proc)
    flower = Flower(port)
    wait_for(flower.answers, 30, cluster, "Flower to answer /healthcheck")
    return flower


def sync_policy_not_due(cluster: Cluster, ledger_url: str) -> None:
    """Sync the policy into the ledger with the secret not due, so only Flower starts a run."""
    runtime = Runtime(Ledger(ledger_url), environ=cluster.env)
    try:
        now = runtime.clock()
        Dispatcher(runtime, cluster.env["KEYTURN_SCHEDULES"]).sync_policies(now)
        with runtime.ledger.transaction() as session:
            moved = session.execute(
                update(Schedule)
                .where(Schedule.secret == "svc/api_key")
                .values(next_due_at=now + timedelta(days=30))
            )
            assert moved.rowcount == 1  # type: ignore[attr-defined]
    finally:
        runtime.close()


def every_value(cluster: Cluster) -> list[str]:
    """Every value the secret ever had, read from the local store's versions."""
    state = store(cluster)._load(None).state
    return [
        str(decode_value(version["value"], version["json"]))
        for version in state["secrets"]["svc/api_key"]["versions"]
    ]


def test_rotate_now_through_flower_without_leaking_values(
    cluster: Cluster, ledger_url: str, ledger: Ledger
) -> None:
    (Path(cluster.env["KEYTURN_SCHEDULES"]) / "fast.yaml").write_text(POLICY)
    store(cluster).write("svc/api_key", "initial-flower-value-77d1")
    sync_policy_not_due(cluster, ledger_url)
    cluster.start("worker")
    cluster.start("beat")  # wakes the run after the retire grace
    flower = start_flower(cluster, [f"--basic-auth={USER}:{PASSWORD}"], {})
    wait_for(
        lambda: cluster.env["KEYTURN_QUEUE"] in flower.call("GET", "/api/workers?refresh=1")[1],
        60,
        cluster,
        "Flower to see the worker",
    )

    # no credentials, or wrong ones: refused, and nothing is sent
    path = "/api/task/async-apply/keyturn.rotate_now"
    body = {"args": ["svc/api_key"]}
    assert flower.call("POST", path, auth=None, body=body)[0] == 401
    wrong = "Basic " + base64.b64encode(f"{USER}:nope".encode()).decode()
    assert flower.call("POST", path, auth=wrong, body=body)[0] == 401
    assert flower.call("GET", "/api/tasks", auth=None)[0] == 401
    assert flower.call("GET", "/api/workers", auth=None)[0] == 401
    time.sleep(1)
    assert runs(ledger) == []

    status, answer = flower.call("POST", path, body=body)
    assert status == 200, answer
    task_id = json.loads(answer)["task-id"]
    wait_for(
        lambda: (
            runs(ledger) and runs(ledger)[0].state in ("succeeded", "failed", "needs_attention")
        ),
        60,
        cluster,
        "the rotation started through Flower to finish",
    )
    (run,) = runs(ledger)
    assert run.state == "succeeded", run.last_error
    assert run.trigger == "api" and run.actor == "api"

    def tasks_seen() -> dict[str, dict[str, object]] | None:
        tasks: dict[str, dict[str, object]] = json.loads(flower.call("GET", "/api/tasks")[1])
        # a worker runs the steps due at once in one task: at least one advance, all done
        advanced = [t for t in tasks.values() if t.get("name") == "keyturn.advance"]
        done = tasks.get(task_id, {}).get("state") == "SUCCESS"
        finished = advanced and all(t.get("state") == "SUCCESS" for t in advanced)
        return tasks if done and finished else None

    tasks = wait_for(tasks_seen, 30, cluster, "Flower to record the task events")
    assert isinstance(tasks, dict)
    status, info = flower.call("GET", f"/api/task/info/{task_id}")
    assert status == 200
    shown = json.loads(info)
    assert shown["name"] == "keyturn.rotate_now" and "svc/api_key" in shown["args"]
    assert f"'run_id': {run.id}" in shown["result"]  # run ids and names, nothing else

    pages = {
        "/api/tasks": flower.call("GET", "/api/tasks")[1],
        "/api/workers": flower.call("GET", "/api/workers?refresh=1")[1],
    }
    for tid in tasks:
        pages[f"/api/task/info/{tid}"] = flower.call("GET", f"/api/task/info/{tid}")[1]
    pages["/metrics"] = flower.call("GET", "/metrics", auth=None)[1]
    assert "svc/api_key" in pages["/api/tasks"]  # names and run ids are shown, values never
    values = every_value(cluster)
    assert len(values) == 2 and "initial-flower-value-77d1" in values  # old and new
    forbidden = [*values, cluster.env["KEYTURN_LOCAL_KEY"]]
    for page, text in pages.items():
        assert text, page
        decoded = text if page == "/metrics" else json.dumps(json.loads(text), ensure_ascii=False)
        leaked = [v for v in forbidden if v in text or v in decoded]
        assert not leaked, f"{page} shows a secret value"


def test_flower_basic_auth_from_the_environment(cluster: Cluster) -> None:
    """docker-compose passes FLOWER_BASIC_AUTH: the API then needs exactly those credentials."""
    flower = start_flower(cluster, [], {"FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}"})
    assert flower.call("GET", "/api/tasks", auth=None)[0] == 401
    wrong = "Basic " + base64.b64encode(b"ops:wrong").decode()
    assert flower.call("GET", "/api/tasks", auth=wrong)[0] == 401
    status, body = flower.call("GET", "/api/tasks")
    # other tests' workers may share the broker (the suite runs in parallel): their tasks show too
    assert status == 200 and isinstance(json.loads(body), dict)
    assert flower.call("GET", "/", auth=None)[0] == 401  # the dashboard too


def test_flower_refuses_its_api_without_any_auth_configured(cluster: Cluster) -> None:
    """Started without --basic-auth (a mistake), Flower still refuses its API (unless
    FLOWER_UNAUTHENTICATED_API is set), but shows its dashboard to anyone: hence the docs."""
    flower = start_flower(cluster, [], {})
    status, _ = flower.call(
        "POST",
        "/api/task/async-apply/keyturn.rotate_now",
        auth=None,
        body={"args": ["svc/api_key"]},
    )
    assert status == 401
    assert flower.call("GET", "/api/tasks", auth=None)[0] == 401
    assert flower.call("GET", "/", auth=None)[0] == 200
