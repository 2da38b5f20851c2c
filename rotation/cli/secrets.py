"""``keyturn secrets``: get, set, list, delete and version secrets in the backend.

``get`` is the only command of Keyturn that prints a value; ``set`` never takes one as an
argument (it would land in shell history and ``ps``): it reads stdin or a hidden prompt.
"""

from __future__ import annotations

import json
import os
import sys

import click
from rich import box
from rich.table import Table
from rich.text import Text

from rotation.cli.common import OpsGroup, echo_json, fmt_time, make_console
from rotation.client.manager import SecretsManager
from rotation.errors import InvalidSecretValue
from rotation.names import validate_name
from rotation.providers.registry import create_provider
from rotation.values import SecretValue, Stage, encode_value


def _manager(ctx: click.Context) -> SecretsManager:
    """A manager for this command only (no cache: the CLI always wants the backend's answer)."""
    alias = ctx.find_root().meta.get("keyturn.provider")
    provider = create_provider(alias, os.environ) if alias else None
    manager = (
        SecretsManager(provider, cache_ttl=0) if provider is not None else SecretsManager.from_env()
    )
    ctx.call_on_close(manager.close)
    return manager


@click.group("secrets", cls=OpsGroup)
@click.option(
    "--provider",
    metavar="ALIAS",
    help="The backend: local, memory, vault, aws, azure (default $SECRETS_PROVIDER).",
)
@click.pass_context
def secrets_group(ctx: click.Context, provider: str | None) -> None:
    """Secrets in the backend: get, set, list, delete, versions.

    \b
    Examples:
      keyturn secrets list --prefix api_key
      printf %s "$TOKEN" | keyturn secrets set ci/token
      keyturn secrets --provider vault versions db_password
    """
    ctx.find_root().meta["keyturn.provider"] = provider


@secrets_group.command("get")
@click.argument("name")
@click.option(
    "--stage",
    type=click.Choice([s.value for s in Stage]),
    default=Stage.CURRENT.value,
    show_default=True,
    help="previous: the value a rollback would restore; pending: a rotation's staged value.",
)
@click.pass_context
def get_command(ctx: click.Context, name: str, stage: str) -> None:
    """Print the value of NAME: a string as is, a JSON object as JSON.

    The only command that prints a value. On a terminal a newline follows; into a pipe or
    file, exactly the value.

    \b
    Examples:
      keyturn secrets get api_key_ncbi
      keyturn secrets get db_credentials | jq -r .password
      keyturn secrets get api_key_ncbi --stage previous
    """
    manager = _manager(ctx)
    if stage == Stage.CURRENT.value:
        value = manager.get(name, use_cache=False)
    else:
        value = manager.provider.read(validate_name(name), stage=Stage(stage)).value
    terminal = sys.stdout.isatty()
    text = encode_value(value)
    if terminal and not isinstance(value, str):
        text = json.dumps(json.loads(text), indent=2, sort_keys=True)
    click.echo(text, nl=terminal)


def _read_value(name: str, as_json: bool) -> SecretValue:
    stdin = sys.stdin
    if stdin.isatty():
        raw: str = click.prompt(
            f"Value for {name}", hide_input=True, confirmation_prompt=True, default=""
        )
    else:
        raw = stdin.read()
        raw = raw[:-2] if raw.endswith("\r\n") else raw[:-1] if raw.endswith("\n") else raw
    if raw == "":
        raise InvalidSecretValue(f"No value given for {name!r}: pipe it on stdin or type it.")
    if not as_json:
        return raw
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:  # position only: the message must not quote the value
        raise InvalidSecretValue(
            f"--json: the value is not valid JSON (line {exc.lineno}, column {exc.colno})."
        ) from None
    if not isinstance(parsed, dict):
        raise InvalidSecretValue(f"--json needs a JSON object, not a {type(parsed).__name__}.")
    return parsed


@secrets_group.command("set")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Parse the value as a JSON object.")
@click.pass_context
def set_command(ctx: click.Context, name: str, as_json: bool) -> None:
    """Store a new current version of NAME, read from stdin or a hidden prompt.

    Never from an argument: values in arguments end up in shell history and process lists.
    One trailing newline on stdin is dropped.

    \b
    Examples:
      keyturn secrets set api_key_ncbi                # prompts twice, input hidden
      printf %s "$TOKEN" | keyturn secrets set ci/token
      keyturn secrets set db_credentials --json < creds.json
    """
    validate_name(name)
    value = _read_value(name, as_json)
    version = _manager(ctx).set(name, value)
    click.echo(f"stored {name} (version {version})")


@secrets_group.command("list")
@click.option("--prefix", default="", help="Only names starting with this.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_context
def list_command(ctx: click.Context, prefix: str, as_json: bool) -> None:
    """Names of the secrets, one a line.

    \b
    Examples:
      keyturn secrets list
      keyturn secrets list --prefix prod/ | wc -l
    """
    names = _manager(ctx).list(prefix)
    if as_json:
        echo_json(names)
    else:
        for name in names:
            click.echo(name)


@secrets_group.command("delete")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def delete_command(ctx: click.Context, name: str, yes: bool) -> None:
    """Delete NAME and all its versions.

    \b
    Examples:
      keyturn secrets delete old_api_key
      keyturn secrets delete old_api_key --yes
    """
    validate_name(name)
    manager = _manager(ctx)
    if not yes:
        click.confirm(
            f"Delete {name} and all its versions from {manager.provider.name}?", abort=True
        )
    manager.delete(name)
    click.echo(f"deleted {name}")


@secrets_group.command("versions")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_context
def versions_command(ctx: click.Context, name: str, as_json: bool) -> None:
    """The retained versions of NAME: id, creation time, stages. Never values.

    \b
    Examples:
      keyturn secrets versions db_credentials
    """
    versions = _manager(ctx).versions(name)
    if as_json:
        echo_json([v.to_dict() for v in versions])
        return
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("version", "created (UTC)", "stages"):
        table.add_column(column, overflow="fold")
    for info in versions:
        table.add_row(
            Text(info.version_id),
            fmt_time(info.created),
            ", ".join(sorted(s.value for s in info.stages)) or "-",
        )
    make_console().print(table)
