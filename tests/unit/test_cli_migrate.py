"""``keyturn migrate-env``: moves values, prints names only."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from rotation import reset_secrets_manager
from rotation.cli import main
from rotation.providers.local import LocalProvider


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("SECRETS_PROVIDER", "local")
    monkeypatch.setenv("KEYTURN_LOCAL_DIR", str(tmp_path / "store"))
    for var in ["DB_PASSWORD", "DB_USER", "NCBI_API_KEY", "SSL_CERT_FILE", "SSL_KEY_FILE"]:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DB_PASSWORD", "pw-value-never-printed")
    monkeypatch.setenv("NCBI_API_KEY", "ncbi-value-never-printed")
    reset_secrets_manager()
    yield tmp_path
    reset_secrets_manager()


def test_dry_run_writes_nothing(env) -> None:
    result = CliRunner().invoke(main, ["migrate-env", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "Would migrate DB_PASSWORD -> db_password" in result.output
    assert "never-printed" not in result.output
    assert LocalProvider(env / "store").list() == []


def test_migrates_default_mapping(env) -> None:
    result = CliRunner().invoke(main, ["migrate-env"])
    assert result.exit_code == 0, result.output
    assert "Migrated NCBI_API_KEY -> api_key_ncbi" in result.output
    assert "never-printed" not in result.output
    store = LocalProvider(env / "store")
    assert store.list() == ["api_key_ncbi", "db_password"]
    assert store.read("db_password").value == "pw-value-never-printed"


def test_mapping_file_and_bad_name(env) -> None:
    good = env / "map.yaml"
    good.write_text("DB_PASSWORD: prod/db_password\n")
    result = CliRunner().invoke(main, ["migrate-env", "--mapping", str(good)])
    assert result.exit_code == 0, result.output
    assert LocalProvider(env / "store").list() == ["prod/db_password"]
    bad = env / "bad.yaml"
    bad.write_text("DB_PASSWORD: ../escape\nNCBI_API_KEY: fine\n")
    result = CliRunner().invoke(main, ["migrate-env", "--mapping", str(bad)])
    assert result.exit_code == 2
    assert "DB_PASSWORD" in result.output and "Invalid secret name" in result.output
    assert LocalProvider(env / "store").list() == ["prod/db_password"]
