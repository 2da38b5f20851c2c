"""The kind table (entry points, duplicates, capabilities) and each kind's target schema, as
``keyturn policies check`` reports it: file, line, field."""

from __future__ import annotations

import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from click.testing import CliRunner

from rotation.cli import main
from rotation.errors import ConfigurationError
from rotation.rotators import registry
from rotation.rotators.base import Capabilities
from rotation.rotators.mysql import grants
from rotation.rotators.mysql.rotator import native_hash
from rotation.rotators.registry import capabilities_of, known_kinds, resolve_rotator

REPO = Path(__file__).resolve().parents[2]


def table(monkeypatch: pytest.MonkeyPatch, *points: EntryPoint) -> registry._RotatorTable:
    """A fresh kind table whose entry points are ``points``."""
    monkeypatch.setattr(registry, "entry_points", lambda group: list(points))
    return registry._RotatorTable({"random": "rotation.rotators.random:RandomRotator"}, {})


def test_entry_points_join_the_table_on_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    point = EntryPoint("demo", "tests.contract.issuer:Issuer", registry.ENTRY_POINT_GROUP)
    kinds = table(monkeypatch, point)
    assert "demo" in kinds and sorted(kinds) == ["demo", "random"]
    assert kinds.resolve("demo").__name__ == "Issuer"


@pytest.mark.parametrize(
    ("points", "message"),
    [
        (
            [EntryPoint("random", "x.y:Z", registry.ENTRY_POINT_GROUP)],
            "Rotator kind 'random' from an entry point (x.y:Z) is already registered by built in",
        ),
        (
            [
                EntryPoint("dup", "a.b:C", registry.ENTRY_POINT_GROUP),
                EntryPoint("dup", "d.e:F", registry.ENTRY_POINT_GROUP),
            ],
            "'dup' from an entry point (d.e:F) is already registered by an entry point (a.b:C)",
        ),
        (
            [EntryPoint("Bad Kind", "a.b:C", registry.ENTRY_POINT_GROUP)],
            "Invalid rotator kind 'Bad Kind'",
        ),
    ],
)
def test_a_duplicate_or_invalid_kind_raises_clearly(
    monkeypatch: pytest.MonkeyPatch, points: list[EntryPoint], message: str
) -> None:
    kinds = table(monkeypatch, *points)
    with pytest.raises(ConfigurationError) as raised:
        assert "random" in kinds
    assert message in str(raised.value)


def test_register_rotator_twice_raises() -> None:
    with pytest.raises(ConfigurationError, match="'mysql' from register_rotator"):
        registry.register_rotator("mysql", "x.y:Z")


def test_a_kind_without_capabilities_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoPromises:
        Target = registry.BaseModel

    monkeypatch.setitem(registry.ROTATORS.aliases, "nopromises", NoPromises)
    with pytest.raises(ConfigurationError, match="declares no capabilities"):
        resolve_rotator("nopromises")


def test_every_builtin_kind_declares_its_promises() -> None:
    assert {
        "random",
        "postgres",
        "mysql",
        "redis",
        "external",
        "aws-iam",
        "ldap",
        "certificate",
    } <= set(known_kinds())
    both = Capabilities(dual_valid=True, revokes=True)
    assert capabilities_of("postgres") == both
    assert capabilities_of("postgres", {"mode": "single"}) == Capabilities(False, True)
    assert capabilities_of("mysql", {"admin_secret": "a"}) == both
    assert capabilities_of("mysql", {"mode": "single"}) == Capabilities(False, True)
    assert capabilities_of("redis", {"admin_secret": "a"}) == both
    assert capabilities_of("external") == both
    assert capabilities_of("random", {}) == Capabilities(True, False)
    hooked = {"issuer": "tests.contract.issuer:Issuer"}
    assert capabilities_of("random", hooked) == Capabilities(True, True)
    assert capabilities_of("aws-iam", {}) == both
    assert capabilities_of("ldap", {}) == Capabilities(False, True)
    assert capabilities_of("ldap", {"mode": "alternating", "admin_secret": "a"}) == both
    internal = {"issuer": "internal", "ca_secret": "ca"}
    assert capabilities_of("certificate", internal) == Capabilities(True, False)
    assert capabilities_of("certificate", {"issuer": "openbao", "role": "r"}) == both
    unrevoked = {"issuer": "openbao", "role": "r", "revoke": False}
    assert capabilities_of("certificate", unrevoked) == Capabilities(True, False)


def check(tmp_path: Path, body: str) -> tuple[int, str]:
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(body))
    result = CliRunner().invoke(main, ["policies", "check", str(path)])
    return result.exit_code, result.stdout


BASE = """\
policies:
  - name: p
    secret: s
    kind: {kind}
    schedule: {{every: 30d}}
    target:
{target}
"""


@pytest.mark.parametrize(
    ("kind", "target", "line", "field", "message"),
    [
        ("mysql", "      mode: single\n      users: [a, b]", 8, "target.users", "only mode"),
        ("mysql", "      mode: alternating", 6, "target.admin_secret", "required for mode"),
        ("mysql", "      admin_secret: a\n      acount_host: x", 8, "target.acount_host", ""),
        (
            "mysql",
            "      admin_secret: a\n      connect_timeout: 0",
            8,
            "target.connect_timeout",
            "",
        ),
        ("redis", "      admin_secret: a\n      persist: always", 8, "target.persist", ""),
        ("redis", "      connect_timeout: 3", 6, "target.admin_secret", "required"),
        ("external", "      url: http://adapter/x\n      hmac_secret: k", 7, "target.url", ""),
        ("external", "      url: https://a/x", 6, "target", "'hmac_secret' is required"),
        ("external", "      command: [x]\n      url: https://a/", 6, "target", "exactly one"),
        ("external", "      command: [x]\n      timeout: 10m", 8, "target.timeout", "at most 4m"),
        ("aws-iam", "      region: Europe", 7, "target.region", "invalid AWS region"),
        ("aws-iam", "      ready_timeout: 10m", 7, "target.ready_timeout", "at most 4m"),
        ("ldap", "      mode: alternating", 6, "target.admin_secret", "required for mode"),
        ("ldap", "      accounts: [uid=a, uid=b]", 7, "target.accounts", "only mode"),
        ("certificate", "      issuer: internal", 6, "target.ca_secret", "required for issuer"),
        ("certificate", "      issuer: openbao", 6, "target.role", "required for issuer"),
        (
            "certificate",
            "      issuer: internal\n      ca_secret: c\n      dns_names: [bad name]",
            9,
            "target.dns_names",
            "invalid DNS name",
        ),
    ],
)
def test_policies_check_locates_each_kinds_target_errors(
    tmp_path: Path, kind: str, target: str, line: int, field: str, message: str
) -> None:
    code, out = check(tmp_path, BASE.format(kind=kind, target=target))
    assert code == 1, out
    first = out.splitlines()[0]
    assert first.startswith(f"{tmp_path / 'p.yaml'}:{line}: policies[0].{field}: "), out
    assert message in first


def test_the_examples_in_schedules_readme_validate(tmp_path: Path) -> None:
    text = (REPO / "schedules" / "README.md").read_text()
    section = text.split("## Targets by kind", 1)[1]
    blocks = [b.split("```", 1)[0] for b in section.split("```yaml\n")[1:]]
    kinds = set()
    for n, block in enumerate(blocks):
        path = tmp_path / f"example{n}.yaml"
        path.write_text(block)
        result = CliRunner().invoke(main, ["policies", "check", str(path)])
        assert result.exit_code == 0, (block, result.stdout)
        kinds.update(
            line.split(":", 1)[1].strip() for line in block.splitlines() if "kind:" in line
        )
    assert {
        "random",
        "postgres",
        "mysql",
        "redis",
        "external",
        "aws-iam",
        "ldap",
        "certificate",
    } <= kinds


def test_mysql_identifiers_and_hashes() -> None:
    assert grants.quote_identifier("a`b%c") == "`a``b%%c`"
    with pytest.raises(ValueError):
        grants.quote_identifier("a\x00b")
    # MariaDB's own PASSWORD('pw'), read from a real server
    assert native_hash("pw") == "*D821809F681A40A6E379B50D0463EFAE20BDD122"
    hostile = grants.Account("x'; DROP USER kt_admin; --", "%")
    level = grants.Level("table", "db`; DROP DATABASE x; --", "t")
    active = grants.Privileges(grants.Account("a", "%"), {level: frozenset({"SELECT"})})
    (statement,) = grants.plan_sync(active, grants.Privileges(hostile))
    text, params = statement
    assert text == "GRANT SELECT ON `db``; DROP DATABASE x; --`.`t` TO %s@%s"
    assert params == ("x'; DROP USER kt_admin; --", "%")  # a driver parameter, never SQL text
    with pytest.raises(ValueError, match="unexpected privilege"):
        level.privilege("SELECT; DROP")
