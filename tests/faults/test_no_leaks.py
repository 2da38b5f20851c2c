"""Secrets never leak: after a realistic mix of rotations through real processes (worker at DEBUG,
beat, Flower, a consumer application, an in-test consumer, the CLI), no value any secret ever
had appears in any Redis command or key, the ledger, any log (plain or structured), Flower's
API, the CLI's output, or the target Postgres server's statement log."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from rotation import SecretsManager
from rotation.client.events import RotationEvent
from rotation.ledger.db import Ledger
from rotation.providers.local import LocalProvider
from tests.backends.cluster import BROKER, REPO, Cluster, runs, store, wait_for
from tests.faults.leakscan import (
    RedisMonitor,
    Source,
    StoreSampler,
    context_of,
    dump_keyspace,
    dump_ledger,
    json_logging_env,
    needles_of,
    scan,
    start_celery,
)
from tests.integration.test_flower import PASSWORD, USER, start_flower

FINAL = ("succeeded", "failed", "needs_attention")
SYMBOLS = "{length: 40, classes: {lower: 1, upper: 1, digits: 1, symbols: 2}}"

POLICIES = f"""
policies:
  - name: api-keys
    secrets: ["leak/api_*"]
    kind: random
    schedule: {{every: 30d}}
    retire_after: 0s
    generator: {SYMBOLS}
  - name: acked
    secrets: [leak/ack_x, leak/ack_y]
    kind: random
    schedule: {{every: 30d}}
    retire_after: 1s
    restart: {{strategy: acknowledge, timeout: 1m}}
  - name: commanded
    secret: leak/cmd
    kind: random
    schedule: {{every: 30d}}
    generator: {SYMBOLS}
    restart:
      strategy: command
      commands: [[sh, -c, "env; echo restarted $KEYTURN_SECRET $KEYTURN_VERSION"]]
      timeout: 3s
  - name: command-fails
    secret: leak/cmdfail
    kind: random
    schedule: {{every: 30d}}
    max_attempts: 2
    restart:
      strategy: command
      commands: [[sh, -c, "env; echo cannot restart >&2; exit 3"]]
      timeout: 3s
      retry_for: 5s   # then rolled back, and the rollback's announcement fails the same way
  - name: issuer-refuses
    secret: leak/issuer
    kind: random
    schedule: {{every: 30d}}
    max_attempts: 2
    consumer_cache_ttl: 0s   # no consumer caches it here (the defaults rule)
    target: {{issuer: "tests.faults.leakscan:RefusingIssuer"}}
  - name: app-db
    secret: leak/db
    kind: postgres
    schedule: {{every: 30d}}
    retire_after: 1s
    restart: {{strategy: acknowledge, timeout: 2m}}
    target: {{mode: alternating, admin_secret: db/admin, connect_timeout: 3}}
"""

API_KEYS = ["leak/api_a", "leak/api_b", "leak/api_c", "leak/api_d"]


def distinctive(label: str) -> str:
    return f"initial-{label}-{uuid.uuid4().hex}"


def start_app(cluster: Cluster) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """The pooled Postgres application (tests/apps/pool_app.py) on leak/db."""
    stats, stop = cluster.workdir / "app.json", cluster.workdir / "app.stop"
    log = open(cluster.workdir / "app.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.apps.pool_app"],
        env={
            **cluster.env,
            "KEYTURN_REDIS_URL": BROKER,
            "APP_SECRET": "leak/db",
            "APP_STATS": str(stats),
            "APP_STOP": str(stop),
            "APP_THREADS": "2",
            "APP_SECONDS": "600",
        },
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    cluster.procs.append(proc)
    return proc, stats, stop


def app_stats(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (FileNotFoundError, ValueError):
        return {}


def cli(cluster: Cluster, *args: str) -> str:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "keyturn"), *args],
        env=cluster.operator_env("leak-test"),
        cwd=REPO,
        capture_output=True,
        timeout=120,
    )
    return f"$ keyturn {' '.join(args)} (exit {done.returncode})\n" + (
        done.stdout + done.stderr
    ).decode("utf-8", "replace")


def all_final(ledger: Ledger, count: int) -> bool:
    found = runs(ledger)
    return len(found) == count and all(r.state in FINAL for r in found)


def setup_database(cluster: Cluster, pg_database) -> str:
    app = pg_database.role("leakapp")
    pg_database.track_role(app + "_clone")
    with pg_database.admin_connect() as conn:
        password = distinctive("pg-password")
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(app), sql.Literal(password)
            )
        )
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(pg_database.name), sql.Identifier(app)
            )
        )
        # every statement of every session on the target database goes to the server log
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET log_statement = 'all'").format(
                sql.Identifier(pg_database.name)
            )
        )
    backend = store(cluster)
    backend.write("db/admin", pg_database.admin_secret)
    backend.write("leak/db", pg_database.credential(app, password))
    return app


def test_scanner_finds_what_it_looks_for() -> None:
    """The scan itself: a value hidden in a Kombu body, JSON-escaped, is found; names are not."""
    import base64

    secret = 'sk-Abc<1/>&"quote"-9f8e7d6c5b4a'
    body = base64.b64encode(json.dumps([["leak/x", {"note": secret}], {}, {}]).encode()).decode()
    message = json.dumps({"body": body, "properties": {"body_encoding": "base64"}, "headers": {}})
    source = Source("redis")
    source.add(message.encode())
    assert source.kombu_bodies == 1
    assert scan([source], [secret]) == {"redis": [secret]}
    assert scan([source], ["leak/other-name"]) == {}
    escaped = Source("log")
    escaped.add(json.dumps({"message": f"oops {secret}"}))
    assert scan([escaped], [secret]) == {"log": [secret]}


@pytest.mark.timeout(600)
def test_no_secret_value_leaks_anywhere(
    cluster: Cluster,
    ledger: Ledger,
    ledger_url: str,
    pg_database,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    began = time.monotonic()
    cluster.env.update(json_logging_env(tmp_path))
    journal = tmp_path / "issuer-values.jsonl"  # the issuer's record of what it saw (not scanned)
    cluster.env["KEYTURN_TEST_NEEDLES"] = str(journal)
    pg_log = pg_database.server.root / "server.log"
    pg_log_start = pg_log.stat().st_size if pg_log.exists() else 0
    monitor = RedisMonitor(BROKER).start()

    # --- the secrets, the policies, the consumers ------------------------------------------
    backend = store(cluster)
    setup_database(cluster, pg_database)
    for name in API_KEYS:
        backend.write(name, distinctive(name.rsplit("/", 1)[1]))
    backend.write("leak/ack_x", distinctive("ack-x"))
    backend.write("leak/ack_y", {"client_id": "client-ack-y", "token": distinctive("ack-y-token")})
    for name in ("leak/cmd", "leak/cmdfail", "leak/issuer"):
        backend.write(name, distinctive(name.rsplit("/", 1)[1]))
    (Path(cluster.env["KEYTURN_SCHEDULES"]) / "leak.yaml").write_text(POLICIES)
    sampler = StoreSampler(cluster.env["KEYTURN_LOCAL_DIR"], cluster.env["KEYTURN_LOCAL_KEY"])
    sampler.start()

    app, app_stats_path, app_stop = start_app(cluster)
    wait_for(
        lambda: (
            app_stats(app_stats_path).get("ok", 0) > 20
            and app_stats(app_stats_path).get("connected")
        ),
        30,
        cluster,
        "the pool application to run",
    )
    consumer = SecretsManager(
        LocalProvider(cluster.env["KEYTURN_LOCAL_DIR"], key=cluster.env["KEYTURN_LOCAL_KEY"]),
        cache_ttl=300,
    )
    refuse = threading.Event()
    moved: list[str] = []

    def rebuild_pool(event: RotationEvent) -> None:
        value = consumer.get(event.secret)
        if refuse.is_set() and event.secret == "leak/ack_y" and event.rollback_of is None:
            # a careless application: its error quotes the credential it could not use
            raise RuntimeError(f"pool rejected the new credential {value}")
        moved.append(event.secret)

    for name in ("leak/ack_x", "leak/ack_y"):
        consumer.get(name)
        consumer.on_rotate(name, rebuild_pool)
    assert consumer.subscribe(BROKER, heartbeat_ttl=3).connected.wait(10)

    try:
        # --- phase 1: the scheduled rotations (never rotated: due at once) ------------------
        # Flower first, so that it records every task from the start
        flower = start_flower(cluster, [f"--basic-auth={USER}:{PASSWORD}"], {})
        start_celery(cluster, "worker", "DEBUG")
        wait_for(
            lambda: cluster.env["KEYTURN_QUEUE"] in flower.call("GET", "/api/workers?refresh=1")[1],
            60,
            cluster,
            "Flower to see the worker",
        )
        start_celery(cluster, "beat", "INFO")
        wait_for(lambda: all_final(ledger, 10), 180, cluster, "the 10 scheduled rotations")
        states = {r.secret: r.state for r in runs(ledger)}
        assert states == {
            **dict.fromkeys(API_KEYS, "succeeded"),
            "leak/ack_x": "succeeded",
            "leak/ack_y": "succeeded",
            "leak/cmd": "succeeded",
            "leak/db": "succeeded",
            "leak/cmdfail": "needs_attention",  # restart failed for 5 s: promotion rolled back
            "leak/issuer": "needs_attention",  # the issuer refused twice: pending discarded
        }, [(r.secret, r.state, r.last_error) for r in runs(ledger)]

        # --- phase 2: manual triggers through Celery (send_task), Flower and the CLI ---------
        cluster.send("keyturn.rotate_all", "leak/api_")
        wait_for(lambda: all_final(ledger, 14), 120, cluster, "rotate_all over leak/api_*")

        refuse.set()
        for name in ("leak/api_a", "leak/api_b", "leak/ack_x", "leak/db"):
            status, answer = flower.call(
                "POST", "/api/task/async-apply/keyturn.rotate_now", body={"args": [name]}
            )
            assert status == 200, answer
        cluster.send("keyturn.rotate_now", "leak/cmd")
        cluster.send("keyturn.rotate_now", "leak/ack_y")
        wait_for(lambda: all_final(ledger, 20), 180, cluster, "the Flower and Celery triggers")

        cluster.send("keyturn.rotate_now", "leak/db")
        outputs = [cli(cluster, "rotate", "leak/api_c", "--wait", "--timeout", "90")]
        wait_for(lambda: all_final(ledger, 22), 120, cluster, "the last rotations")
        outputs += [
            cli(cluster, "history", "leak/api_c"),
            cli(cluster, "runs", "--json", "--limit", "100"),
            cli(cluster, "status"),
            cli(cluster, "secrets", "versions", "leak/db"),
        ]

        done = runs(ledger)
        outcome = {s: sum(1 for r in done if r.state == s) for s in FINAL}
        assert outcome == {"succeeded": 19, "failed": 1, "needs_attention": 2}, [
            (r.secret, r.state, r.last_error) for r in done
        ]
        failed = next(r for r in done if r.state == "failed")
        assert failed.secret == "leak/ack_y" and "RuntimeError" in (failed.last_error or "")
        assert app_stats(app_stats_path).get("failed") == 0, app_stats(app_stats_path)

        # --- Flower's view: every task it recorded, each task's detail, the workers ---------
        advances = len(done)  # at least one task per run (a worker runs due steps in one task)

        def flower_tasks() -> dict[str, Any] | None:
            tasks: dict[str, Any] = json.loads(flower.call("GET", "/api/tasks")[1])
            seen = [t for t in tasks.values() if t.get("name") == "keyturn.advance"]
            ended = all(t.get("state") in ("SUCCESS", "FAILURE") for t in seen)
            return tasks if len(seen) >= advances and ended else None

        tasks = wait_for(flower_tasks, 30, cluster, "Flower to record the tasks")
        assert isinstance(tasks, dict)
        flower_pages = [flower.call("GET", "/api/tasks")[1]]
        flower_pages += [flower.call("GET", f"/api/task/info/{tid}")[1] for tid in tasks]
        flower_pages.append(flower.call("GET", "/api/workers?refresh=1")[1])
        flower_pages.append(flower.call("GET", "/api/tasks?state=FAILURE")[1])
        assert all(flower.call("GET", f"/api/task/info/{t}")[0] == 200 for t in list(tasks)[:3])
    finally:
        app_stop.touch()
        try:
            app.wait(20)
        except subprocess.TimeoutExpired:
            pass
        consumer.close()
        commands = monitor.stop()
        needles = sampler.stop()

    # --- every value every secret ever had -------------------------------------------------
    if journal.exists():
        for line in journal.read_text().splitlines():
            needles |= needles_of(json.loads(line))
    for name in [*API_KEYS, "leak/ack_x", "leak/ack_y", "leak/cmd", "leak/db"]:
        assert needles_of(backend.read(name).value) <= needles, name
    assert journal.exists() and len(journal.read_text().splitlines()) >= 1
    # 12 secrets' initial values + 22 runs' new values (JSON values add their secret fields)
    assert len(needles) >= 12 + 22, len(needles)

    # --- the places a value could end up ---------------------------------------------------
    redis_source = Source("Redis commands (MONITOR)")
    for args in commands:
        redis_source.add_all(args)
    keyspace = Source("Redis keyspace (db of the broker, at the end)")
    for key, kind, parts in dump_keyspace(BROKER):
        keyspace.add(key + b" " + kind)
        keyspace.add_all(parts)
    ledger_source = Source("ledger database (pg_dump)")
    ledger_source.add(dump_ledger(ledger_url))
    logs = Source("logs (worker, beat, Flower, app: plain and JSON records; pytest caplog)")
    log_files = sorted(cluster.workdir.glob("*.log")) + sorted(
        (tmp_path / "jsonlogs").glob("*.jsonl")
    )
    for path in log_files:
        logs.add(path.read_bytes())
    logs.add(caplog.text)
    logs.add_all(json.dumps(r.__dict__, default=repr) for r in caplog.records)
    flower_source = Source("Flower API (/api/tasks, /api/task/info/<id>, /api/workers)")
    flower_source.add_all(flower_pages)
    cli_source = Source("CLI output (rotate --wait, history, runs, status, versions)")
    cli_source.add_all(outputs)
    pg_source = Source("target Postgres server log (log_statement=all)")
    with pg_log.open("rb") as handle:
        handle.seek(pg_log_start)
        pg_source.add(handle.read())
    sources = [
        redis_source,
        keyspace,
        ledger_source,
        logs,
        flower_source,
        cli_source,
        pg_source,
    ]

    print(f"\nleak scan: {len(done)} runs, {len(needles)} values searched in")
    for source in sources:
        print(f"  {source.size:>12,} chars  {source.name}")
    print(
        f"  ({len(commands):,} Redis commands, {redis_source.kombu_bodies:,} message bodies "
        f"decoded, {len(log_files)} log files, {len(tasks)} Flower tasks, "
        f"{sampler.samples} store samples; {time.monotonic() - began:.0f}s)"
    )

    # the scan saw what is there: each place is non-empty and shows names, never values
    assert all(source.size > 0 for source in sources)
    assert redis_source.kombu_bodies > 100
    json_records = [
        json.loads(line)
        for path in (tmp_path / "jsonlogs").glob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert any(r.get("action") == "restart.command" and r.get("output") for r in json_records)
    for source in (redis_source, ledger_source, logs, flower_source, cli_source):
        assert source.contains("leak/api_a"), source.name
    assert pg_source.contains("ALTER ROLE")

    hits = scan(sources, needles)
    report = {
        place: [context_of(next(s for s in sources if s.name == place), n) for n in found]
        for place, found in hits.items()
    }
    assert hits == {}, json.dumps(report, indent=2)


def test_restart_command_output_never_logs_the_workers_credentials(
    ledger_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch
) -> None:
    from rotation.providers.memory import MemoryProvider
    from tests.integration.test_engine import drive
    from tests.integration.test_restart import policy, run_state, start_run

    credentials = {
        "KEYTURN_LOCAL_KEY": "bG9jYWwtc3RvcmUta2V5LW5ldmVyLWluLWxvZ3MtMDAwMDA=",
        "VAULT_TOKEN": "hvs.worker-token-never-in-logs-4d2c",
        "AWS_SECRET_ACCESS_KEY": "aws-secret-never-in-logs-9b1e7f",
    }
    for name, value in credentials.items():
        monkeypatch.setenv(name, value)
    secret = f"svc_{uuid.uuid4().hex[:8]}/api_key"
    backend = MemoryProvider()
    backend.write(secret, "initial-value-for-the-env-test")
    body = policy(secret, "{strategy: command, commands: [[sh, -c, env]], timeout: 3s}")
    caplog.set_level(logging.INFO, logger="keyturn.restart")
    runtime, engine, dispatcher, clock, enqueue = start_run(ledger_url, backend, tmp_path, body)
    try:
        ((run_id, state),) = enqueue
        drive(engine, run_id, state, clock, dispatcher)
        assert run_state(runtime, run_id).state == "succeeded"
    finally:
        runtime.close()
    outputs = [str(getattr(r, "output", "")) for r in caplog.records if r.name == "keyturn.restart"]
    assert outputs and all("KEYTURN_SECRET=" + secret in o for o in outputs)  # it did print env
    leaked = sorted(name for name, value in credentials.items() if any(value in o for o in outputs))
    assert leaked == [], f"the restart command's logged output shows {leaked}"
