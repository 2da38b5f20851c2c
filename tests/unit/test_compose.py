"""docker-compose.yml, Dockerfile and .dockerignore, checked statically (no Docker engine here):
services, start order, healthchecks, required credentials, and commands that really exist."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from rotation.cli import main
from rotation.ledger.db import database_url

REPO = Path(__file__).resolve().parents[2]
SERVICES = {"postgres", "redis", "vault", "migrate", "worker", "beat", "flower", "metrics"}
#: ``${VAR:?message}``: compose refuses to start while VAR is unset or empty.
REQUIRED = re.compile(r"\$\{(\w+):\?[^}]*\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return loaded


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]  # type: ignore[no-any-return]


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR:?msg}`` substitution, failing like compose on a missing variable."""

    def value(match: re.Match[str]) -> str:
        if not env.get(match.group(1)):
            raise KeyError(match.group(1))
        return env[match.group(1)]

    return REQUIRED.sub(value, text)


def test_every_service_is_there_with_a_healthcheck(compose) -> None:
    found = services(compose)
    assert set(found) == SERVICES
    for name, service in found.items():
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        if name == "migrate":  # one-shot: its exit status is what the others wait for
            assert check == {"disable": True} and service["restart"] == "no"
        else:
            assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_start_order(compose) -> None:
    found = services(compose)
    assert found["postgres"]["image"] == "postgres:16"
    assert "pg_isready" in " ".join(found["postgres"]["healthcheck"]["test"])
    assert found["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "-dev" in found["vault"]["command"]
    assert found["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert found["migrate"]["command"] == ["keyturn", "db", "upgrade"]
    worker = found["worker"]["depends_on"]
    assert worker["migrate"] == {"condition": "service_completed_successfully"}
    assert worker["redis"] == {"condition": "service_healthy"}
    assert worker["vault"] == {"condition": "service_healthy"}
    assert found["worker"]["command"] == ["celery", "-A", "worker", "worker", "-l", "INFO"]
    assert found["beat"]["command"][:6] == ["celery", "-A", "worker", "beat", "-l", "INFO"]
    for name in ("beat", "flower", "metrics"):
        assert found[name]["depends_on"], name


def test_worker_environment_is_wired(compose) -> None:
    env = services(compose)["worker"]["environment"]
    assert env["SECRETS_PROVIDER"] == "vault"
    assert env["VAULT_ADDR"] == "http://vault:8200"
    assert env["KEYTURN_BROKER_URL"] == "redis://redis:6379/0"
    assert env["KEYTURN_SCHEDULES"] == "/app/schedules"
    assert REQUIRED.fullmatch(env["VAULT_TOKEN"])
    url = interpolate(env["KEYTURN_DATABASE_URL"], {"POSTGRES_PASSWORD": "pw"})
    assert database_url({"KEYTURN_DATABASE_URL": url}).startswith("postgresql+psycopg://keyturn:")
    with pytest.raises(KeyError):  # no default password: compose refuses to start without one
        interpolate(env["KEYTURN_DATABASE_URL"], {})


def test_flower_requires_basic_auth_and_gets_no_other_credential(compose) -> None:
    flower = services(compose)["flower"]
    env = flower["environment"]
    assert REQUIRED.fullmatch(env["FLOWER_BASIC_AUTH"]).group(1) == "FLOWER_BASIC_AUTH"  # type: ignore[union-attr]
    assert "FLOWER_UNAUTHENTICATED_API" not in env
    assert set(env) == {"KEYTURN_BROKER_URL", "FLOWER_BASIC_AUTH"}
    assert flower["command"][:4] == ["celery", "-A", "worker", "flower"]
    assert not [a for a in flower["command"] if a.startswith("--basic-auth")]  # not in argv
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])


def test_no_credential_has_a_literal_value(compose) -> None:
    text = (REPO / "docker-compose.yml").read_text()
    for name, service in services(compose).items():
        for key, raw in (service.get("environment") or {}).items():
            if re.search(r"(PASSWORD|TOKEN|BASIC_AUTH|SECRET_ID|SECRET_KEY)$", key):
                assert REQUIRED.fullmatch(str(raw)), f"{name}.{key} must come from the environment"
            if key.endswith("_URL") and "@" in str(raw):  # user:password@host
                assert "${POSTGRES_PASSWORD:?" in str(raw), f"{name}.{key}"
    assert "${VAULT_TOKEN:?" in text and "${POSTGRES_PASSWORD:?" in text


def test_keyturn_commands_in_compose_exist(compose) -> None:
    for name, service in services(compose).items():
        command = service.get("command")
        if not command or command[0] != "keyturn":
            continue
        group: click.Command = main
        args = list(command[1:])
        while isinstance(group, click.Group):
            sub = group.get_command(click.Context(group), args[0])
            assert sub is not None, f"{name}: keyturn has no {args[0]!r}"
            group, args = sub, args[1:]
        group.make_context(group.name or "", args)  # options parse


def test_dockerfile() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert text.splitlines()[3] == "FROM python:3.11-slim"
    assert "pip install '.[all]'" in text
    for path in ("rotation/", "worker/", "migrations/", "schedules/", "alembic.ini"):
        assert re.search(rf"^COPY {re.escape(path)}", text, re.M), path
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK ", text, re.M)
    env_names = re.findall(r"^\s*(?:ENV\s+)?([A-Z_]+)=", text, re.M)
    assert not [n for n in env_names if re.search("PASSWORD|TOKEN|SECRET|_KEY$", n)]


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".env", ".keyturn", ".venv", "tests"} <= ignored
    assert "README.md" not in ignored  # pyproject's readme, needed by pip install .
