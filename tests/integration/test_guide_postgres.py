"""docs/guide-postgres.md, followed step by step: its SQL on a password-checking PostgreSQL,
its two secrets stored with ``keyturn secrets set``, its policy (``retire_after`` shortened to
seconds), real workers and beat, and docs/examples/postgres_app.py running with exactly the
environment the guide lists, while ``keyturn rotate --wait`` rotates the login: not one query
fails, the application moves to the clone, the old password is refused after retirement."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.backends.cluster import BROKER, REPO, Cluster
from tests.integration.dashboard_server import KEYTURN

GUIDE = REPO / "docs" / "guide-postgres.md"
APP = REPO / "docs" / "examples" / "postgres_app.py"
ROLES = ("orders_app_clone", "orders_app", "orders_rw", "orders_admin")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", GUIDE.read_text(), re.S)


def keyturn(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [*KEYTURN, *args],
        env=env,
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"keyturn {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout + done.stderr


class App:
    """docs/examples/postgres_app.py in its own process; its lines collected as they come."""

    def __init__(self, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, str(APP)],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    def wait_for(self, pattern: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if re.search(pattern, line):
                    return line
            assert self.process.poll() is None, "\n".join(self.lines)
            time.sleep(0.2)
        raise AssertionError(f"no line matching {pattern!r}:\n" + "\n".join(self.lines[-20:]))

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
        self._reader.join(10)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return "\n".join(self.lines)


def test_the_guide_rotates_a_login_under_a_running_application(
    cluster: Cluster, pg_database, tmp_path: Path
) -> None:
    for role in ROLES:
        pg_database.track_role(role)
    server = pg_database.server

    # the guide's excerpt of the application is the program the test runs
    (excerpt,) = blocks("python")
    program = APP.read_text()
    for line in excerpt.splitlines():
        code = line.split("#")[0].strip()
        if code.startswith("def "):  # the example has type hints
            code = code.split("(")[0] + "("
        assert not code or code in program, f"the guide shows {code!r}, the example lacks it"

    # 1. the roles (the guide's SQL as it is), and a table the group may read
    with pg_database.admin_connect() as conn:
        conn.execute("CREATE TABLE orders (id int)")
        conn.execute("INSERT INTO orders VALUES (1), (2)")
        (sql_block,) = blocks("sql")
        conn.execute(sql_block)

    # 2. the two secrets, pointed at this server, stored with the guide's commands
    app_secret, admin_secret = (json.loads(b) for b in blocks("json"))
    for secret in (app_secret, admin_secret):
        secret.update(host=server.host, port=server.port, dbname=pg_database.name)
    (tmp_path / "orders_app.json").write_text(json.dumps(app_secret))
    (tmp_path / "orders_admin.json").write_text(json.dumps(admin_secret))
    commands = [c for c in blocks("bash")[0].splitlines() if c.startswith("keyturn secrets set")]
    assert len(commands) == 2
    for command in commands:
        name, _, file = command.split()[3], "<", command.split()[-1]
        keyturn(cluster.env, "secrets", "set", name, "--json", stdin=(tmp_path / file).read_text())

    # 4. the application, with exactly the environment the guide lists (local store here)
    plain = {k: v for k, v in os.environ.items() if not k.startswith(("KEYTURN_", "SECRETS_"))}
    app_env = {
        **plain,
        "SECRETS_PROVIDER": "local",
        "KEYTURN_LOCAL_DIR": cluster.env["KEYTURN_LOCAL_DIR"],
        "KEYTURN_LOCAL_KEY": cluster.env["KEYTURN_LOCAL_KEY"],
        "KEYTURN_REDIS_URL": BROKER,
        "PYTHONUNBUFFERED": "1",
    }
    assert "KEYTURN_DATABASE_URL" not in app_env
    app = App(app_env)
    try:
        app.wait_for(r"ok=\d+ failed=0 user=orders_app$")

        # 3. the policy (retire_after shortened: the test does not wait an hour)
        (policy,) = [b for b in blocks("yaml") if "kind: postgres" in b]
        policy = policy.replace("retire_after: 1h", "retire_after: 3s")
        (Path(cluster.env["KEYTURN_SCHEDULES"]) / "orders.yaml").write_text(policy)
        keyturn(cluster.env, "policies", "check", cluster.env["KEYTURN_SCHEDULES"])
        cluster.start("worker")
        cluster.start("beat")

        # 5. rotate, and watch
        deadline = time.monotonic() + 60
        while "db/orders_app" not in keyturn(cluster.env, "status"):  # beat synced the policy
            assert time.monotonic() < deadline, cluster.logs()
            time.sleep(0.5)
        operator = cluster.operator_env("dba")
        output = keyturn(operator, "rotate", "db/orders_app", "--wait", "--timeout", "120")
        assert "succeeded" in output, output + cluster.logs()
        app.wait_for(r"moved to version \S+ of db/orders_app")
        app.wait_for(r"ok=\d+ failed=0 user=orders_app_clone$")
        time.sleep(1.5)  # queries on the new login, after the old one was retired
    finally:
        log = app.stop()

    stopped = re.search(r"stopped: ok=(\d+) failed=(\d+)", log)
    assert stopped is not None, log
    assert int(stopped.group(2)) == 0, log
    assert int(stopped.group(1)) > 100, log
    assert "query failed" not in log

    current = json.loads(keyturn(cluster.env, "secrets", "get", "db/orders_app"))
    assert current["username"] == "orders_app_clone"
    assert not pg_database.accepts("orders_app", "first-password")  # retired: scrambled
    with pg_database.connect("orders_app_clone", current["password"]) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (2,)  # the group's grant
    assert "first-password" not in log and current["password"] not in log
