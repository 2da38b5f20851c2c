"""Moving secrets from environment variables into the backend (`keyturn migrate-env`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from rotation.client.manager import SecretsManager
from rotation.errors import ConfigurationError, InvalidSecretName
from rotation.names import validate_name
from rotation.values import SecretValue

__all__ = ["DEFAULT_MAPPING", "MigrationStep", "load_mapping", "migrate_env", "plan_migration"]

#: The default mapping (README, `keyturn migrate-env`): environment variable -> secret name.
DEFAULT_MAPPING: dict[str, str] = {
    "DB_PASSWORD": "db_password",
    "DB_USER": "db_user",
    "DB_HOST": "db_host",
    "DB_PORT": "db_port",
    "DB_NAME": "db_name",
    "NCBI_API_KEY": "api_key_ncbi",
    "OPENFDA_API_KEY": "api_key_openfda",
    "OPENAI_API_KEY": "api_key_openai",
    "SSL_CERT_FILE": "tls_cert_path",
    "SSL_KEY_FILE": "tls_key_path",
}


@dataclass(frozen=True)
class MigrationStep:
    """One variable to move; ``present`` is False when the variable is unset or empty."""

    env_var: str
    secret_name: str
    present: bool


def load_mapping(path: str | Path) -> dict[str, str]:
    """A mapping file: YAML ``ENV_VAR: secret_name`` pairs (or ``ENV_VAR=secret_name`` lines)."""
    text = Path(path).read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path}: not valid YAML ({exc.__class__.__name__}).") from None
    if isinstance(data, str) or data is None:
        data = dict(
            line.split("=", 1)
            for line in text.splitlines()
            if "=" in line and not line.startswith("#")
        )
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: expected ENV_VAR: secret_name pairs.")
    mapping: dict[str, str] = {}
    for env_var, name in data.items():
        env_var, name = str(env_var).strip(), str(name).strip()
        try:
            mapping[env_var] = validate_name(name)
        except InvalidSecretName as exc:
            raise ConfigurationError(f"{path}: {env_var}: {exc.message}") from None
    return mapping


def plan_migration(mapping: Mapping[str, str], environ: Mapping[str, str]) -> list[MigrationStep]:
    """What :func:`migrate_env` would do; checks every name first."""
    for name in mapping.values():
        validate_name(name)
    return [MigrationStep(var, name, bool(environ.get(var))) for var, name in mapping.items()]


def migrate_env(
    manager: SecretsManager, mapping: Mapping[str, str], environ: Mapping[str, str]
) -> list[MigrationStep]:
    """Store each present variable under its secret name; returns the plan carried out."""
    plan = plan_migration(mapping, environ)
    values: dict[str, SecretValue] = {s.secret_name: environ[s.env_var] for s in plan if s.present}
    manager.set_many(values)
    return plan
