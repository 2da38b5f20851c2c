"""Policy schema and loading: valid files load, every error names its file, line and field."""

from __future__ import annotations

import textwrap
from datetime import time, timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from rotation.durations import format_duration, parse_duration
from rotation.errors import ConfigurationError, PolicyConflictError, PolicyError, PolicyFileError
from rotation.policy import (
    Policy,
    default_schedules_dir,
    load_policies,
    load_policy_file,
    load_policy_text,
    resolve_secret_policies,
)
from rotation.rotators.postgres.target import PostgresTarget
from rotation.rotators.registry import ROTATORS

REPO = Path(__file__).resolve().parents[2]

MINIMAL = {"name": "keys", "secrets": ["api_key_*"], "kind": "random", "schedule": {"every": "30d"}}


def policy(**overrides: object) -> Policy:
    return Policy.model_validate({**MINIMAL, **overrides})


def errors_of(text: str) -> list[str]:
    with pytest.raises(PolicyFileError) as caught:
        load_policy_text(textwrap.dedent(text), "p.yaml")
    return [str(e) for e in caught.value.errors]


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10s", timedelta(seconds=10)),
        ("15m", timedelta(minutes=15)),
        ("12h", timedelta(hours=12)),
        ("30d", timedelta(days=30)),
        ("2w", timedelta(weeks=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d12h", timedelta(days=1, hours=12)),
        (" 5M ", timedelta(minutes=5)),
        (3600, timedelta(hours=1)),
        ("90", timedelta(seconds=90)),
        (0, timedelta(0)),
    ],
)
def test_parse_duration(text: str | int, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "bad", ["30x", "", "d", "1.5h", "30m1h", "1h 1h", "-5m", -1, True, 1.5, None, [1], 10**30]
)
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(bad)


def test_format_duration_round_trips() -> None:
    for text in ["10s", "15m", "12h", "30d", "2w", "1h30m", "1d2h3m4s", "0s"]:
        assert format_duration(parse_duration(text)) == text


# --- the schema ------------------------------------------------------------------------------


def test_minimal_policy_defaults() -> None:
    p = policy()
    assert p.interval == timedelta(days=30)
    assert p.window is None and p.provider is None and not p.paused
    assert p.jitter == p.retire_after == timedelta(0)
    assert p.max_attempts == 5
    assert p.restart.strategy == "none"
    assert p.target_settings() == {"issuer": None}


def test_secret_shorthand_is_secrets() -> None:
    data = {k: v for k, v in MINIMAL.items() if k != "secrets"}
    short = Policy.model_validate({**data, "secret": "db"})
    assert short.patterns == ("db",)
    assert short.spec_hash == policy(secrets=["db"]).spec_hash
    assert policy(secrets="one").patterns == ("one",)


def test_matches_names_and_globs() -> None:
    p = policy(secrets=["api_key_*", "ncbi_api_key", "tok[0-9]"])
    assert p.matches("api_key_ncbi") and p.matches("ncbi_api_key") and p.matches("tok7")
    assert not p.matches("API_KEY_X") and not p.matches("ncbi_api_key2") and not p.matches("tokx")
    assert Policy.is_glob("api_key_*") and Policy.is_glob("a?") and Policy.is_glob("[ab]")
    assert not Policy.is_glob("ncbi_api_key")


def test_spec_hash_is_stable_and_tracks_meaning() -> None:
    a, b = policy(), policy()
    assert a.spec_hash == b.spec_hash and hash(a) == hash(b)
    assert len(a.spec_hash) == 64
    assert policy(schedule={"every": "720h"}).spec_hash == a.spec_hash  # same meaning
    assert policy(schedule={"every": "31d"}).spec_hash != a.spec_hash
    assert policy(paused=True).spec_hash != a.spec_hash
    assert policy(target={"issuer": "pkg.mod:hook"}).spec_hash != a.spec_hash


def test_policy_is_frozen() -> None:
    with pytest.raises(ValidationError):
        policy().name = "other"  # type: ignore[misc]


#: What a revoking kind needs to pass the defaults rule (a grace of the consumers' cache TTL).
GRACE = {"retire_after": "5m"}


def test_postgres_target_defaults_and_validation() -> None:
    p = policy(kind="postgres", target={"admin_secret": "db_admin"}, **GRACE)
    assert isinstance(p.target, PostgresTarget)
    assert p.target_settings() == {
        "mode": "alternating",
        "admin_secret": "db_admin",
        "users": None,
        "connect_timeout": 5,
        "probe": "SELECT 1",
    }
    single = policy(kind="postgres", target={"mode": "single"}, **GRACE)
    assert single.target_settings()["mode"] == "single"
    users = policy(
        kind="postgres", target={"admin_secret": "a", "users": ["app", "app_b"]}, **GRACE
    )
    assert users.target_settings()["users"] == ("app", "app_b")
    target = {"admin_secret": "a", "probe": " SELECT 1 FROM t; "}
    probe = policy(kind="postgres", target=target, **GRACE)
    assert probe.target_settings()["probe"] == "SELECT 1 FROM t"
    for bad in [
        {},  # alternating needs admin_secret
        {"admin_secret": "a", "users": ["app"]},
        {"admin_secret": "a", "users": ["app", "app"]},
        {"admin_secret": "a", "users": ["app", "bad name"]},
        {"mode": "single", "users": ["a", "b"]},
        {"mode": "both", "admin_secret": "a"},
        {"admin_secret": "a", "connect_timeout": 0},
        {"admin_secret": "a", "extra": 1},
        {"admin_secret": "a", "probe": ""},
        {"admin_secret": "a", "probe": ";"},
        {"admin_secret": "a", "probe": "SELECT 1; DROP TABLE orders"},
    ]:
        with pytest.raises(ValidationError):
            policy(kind="postgres", target=bad, **GRACE)


# --- the defaults rule (rotation/policy/grace.py) --------------------------------------------

PG = {"kind": "postgres", "target": {"admin_secret": "db/admin"}}


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # retire_after 0s, restart none: the old role scrambled while consumers cache it
        {"retire_after": "4m"},
        {"restart": {"strategy": "acknowledge", "on_timeout": "proceed"}},
        {
            "restart": {
                "strategy": "waves",
                "waves": [{"strategy": "acknowledge"}, {"strategy": "none"}],
            }
        },
        {"retire_after": "1m", "consumer_cache_ttl": "2m"},
        {"target": {"mode": "single"}},
    ],
)
def test_a_revoking_kind_needs_a_confirming_restart_or_a_grace(overrides: dict) -> None:
    with pytest.raises(ValidationError) as caught:
        policy(**{**PG, **overrides})
    (error,) = caught.value.errors()
    assert error["loc"] == ("retire_after",)
    message = error["msg"]
    assert "shorter than consumer_cache_ttl" in message and "revokes the old credential" in message
    assert "confirming restart strategy" in message


@pytest.mark.parametrize(
    "overrides",
    [
        {"retire_after": "5m"},
        {"restart": {"strategy": "acknowledge", "timeout": "2m"}},
        {"restart": {"strategy": "command", "commands": [["kubectl", "rollout", "restart"]]}},
        {"restart": {"strategy": "webhook", "url": "https://h/x", "hmac_secret": "hooks/k"}},
        {"restart": {"strategy": "waves", "waves": [{"strategy": "acknowledge"}]}},
        {"retire_after": "1m", "consumer_cache_ttl": "1m"},
        {"consumer_cache_ttl": "0s"},  # consumers that never cache (use_cache=False)
    ],
)
def test_the_defaults_rule_accepts_safe_policies(overrides: dict) -> None:
    policy(**{**PG, **overrides})


def test_the_defaults_rule_leaves_kinds_that_do_not_revoke_alone() -> None:
    assert policy().retire_after == timedelta(0)  # random without an issuer: nothing revoked
    assert policy().consumer_cache_ttl == timedelta(minutes=5)


def test_policies_check_refuses_an_unsafe_policy_naming_field_and_rule(tmp_path: Path) -> None:
    errors = errors_of(
        """
        name: app-db
        secret: db/app
        kind: postgres
        schedule: {every: 30d}
        retire_after: 30s
        target: {admin_secret: db/admin}
        """
    )
    (error,) = errors
    assert error.startswith("p.yaml:6: retire_after: 30s is shorter than consumer_cache_ttl (5m)")


def test_a_registered_kind_brings_its_target_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    from rotation.rotators.base import Capabilities
    from rotation.schema import Spec

    class LdapTarget(Spec):
        base_dn: str

    class LdapRotator:
        kind = "ldap"
        Target = LdapTarget
        capabilities = Capabilities(dual_valid=True, revokes=True)

    monkeypatch.setitem(ROTATORS.aliases, "ldap", LdapRotator)
    p = policy(kind="ldap", target={"base_dn": "dc=x"}, **GRACE)
    assert p.target_settings() == {"base_dn": "dc=x"}
    with pytest.raises(ValidationError):
        policy(kind="ldap", target={}, **GRACE)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"name": "Bad Name"}, "invalid policy name"),
        ({"secrets": []}, "required"),
        ({"secrets": ["a", "a"]}, "listed twice"),
        ({"secrets": ["../etc"]}, "Invalid secret name"),
        ({"secrets": ["api key*"]}, "invalid glob"),
        ({"secret": "a"}, "not both"),
        ({"provider": "valut"}, "did you mean 'vault'"),
        ({"kind": "randm"}, "did you mean 'random'"),
        ({"schedule": {"every": "0s"}}, "longer than 0s"),
        ({"schedule": {}}, "give 'every'"),
        ({"schedule": {"every": "1d", "cron": "@daily"}}, "either 'every'"),
        (
            {"schedule": {"renew_before": "30d"}},
            "renew_before needs a kind whose credentials expire",
        ),
        ({"schedule": {"cron": "0 3 * *"}}, "invalid cron"),
        ({"schedule": {"cron": "0 3 * * 0 0"}}, "invalid cron"),
        ({"schedule": {"cron": "H 3 * * *"}}, "invalid cron"),
        ({"schedule": {"cron": "0 0 30 2 *"}}, "never fires"),
        ({"jitter": "30d"}, "less than the interval"),
        ({"schedule": {"cron": "0 * * * *"}, "jitter": "2h"}, "less than the interval"),
        ({"window": {"start": "02:00"}}, "both 'start' and 'end'"),
        ({"window": {"start": "02:00", "end": "02:00"}}, "omit both"),
        ({"window": {"start": "25:00", "end": "02:00"}}, "invalid time"),
        ({"window": {"days": []}}, "at least one day"),
        ({"window": {"days": ["funday"]}}, "unknown day"),
        ({"restart": {"strategy": "reboot"}}, "unknown restart strategy"),
        ({"target": {"issuer": "not an import path"}}, "package.module:attr"),
        ({"max_attempts": 0}, "greater than or equal to 1"),
        ({"max_attempts": 51}, "less than or equal to 50"),
        ({"max_attempts": True}, "valid integer"),
        ({"paused": "maybe"}, "valid boolean"),
        ({"retire_after": "1y"}, "invalid duration"),
        ({"generator": {"length": 4}}, "greater than or equal to 8"),
        ({"surprise": 1}, "Extra inputs"),
    ],
)
def test_invalid_policies(overrides: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment.replace("(", r"\(")):
        policy(**overrides)


def test_window_parsing() -> None:
    p = policy(window={"days": ["Monday", "fri", "mon"], "start": "22:00", "end": "2:00"})
    assert p.window is not None
    assert p.window.days == ("mon", "fri")
    assert (p.window.start, p.window.end) == (time(22), time(2))
    assert p.window.length == timedelta(hours=4)
    assert p.window.describe() == "mon,fri 22:00-02:00"
    weekdays = policy(window={"days": ["mon", "tue", "wed", "thu", "fri"]})
    assert weekdays.window is not None and weekdays.window.describe() == "mon-fri"


def test_restart_strategies_can_grow(monkeypatch: pytest.MonkeyPatch) -> None:
    from typing import Literal

    from rotation.policy.restart import RESTART_STRATEGIES, RestartEntry, RestartStrategy

    class Reload(RestartStrategy):
        strategy: Literal["reload"] = "reload"
        command: str

    monkeypatch.setitem(RESTART_STRATEGIES.aliases, "reload", RestartEntry(Reload, "x:y"))
    p = policy(restart={"strategy": "reload", "command": "systemctl reload app"})
    assert isinstance(p.restart, Reload)
    assert p.spec_hash != policy(restart={"strategy": "reload", "command": "other"}).spec_hash


# --- files -----------------------------------------------------------------------------------


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def test_shipped_examples_are_valid() -> None:
    result = load_policies(REPO / "schedules")
    assert result.errors == []
    by_name = {p.name: p for p in result.policies}
    assert by_name["api-keys"].interval == timedelta(days=30)
    assert by_name["api-keys"].generator.prefix == "sk-"
    db = by_name["db-credentials"]
    assert db.interval == timedelta(days=90) and db.retire_after == timedelta(hours=1)
    assert db.target_settings()["mode"] == "alternating"
    assert db.target_settings()["admin_secret"] == "db_admin"


def test_single_policy_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "one.yaml",
        """
        name: one
        secret: token
        kind: random
        schedule: {cron: "0 3 * * 0"}
        window: {start: 22:00, end: 02:00}
        """,
    )
    [p] = load_policy_file(path)
    assert p.name == "one" and p.interval is None and p.schedule.cron == "0 3 * * 0"
    assert p.window is not None and p.window.start == time(22)
    assert p.source == f"{path}:2"


def test_error_names_file_line_and_field() -> None:
    errors = errors_of(
        """\
        policies:
          - name: ok
            secrets: [a]
            kind: random
            schedule: {every: 1d}
          - name: bad
            secrets: [b]
            kind: random
            schedule:
              every: 30x
            shedule: {}
        """
    )
    assert errors == [
        "p.yaml:10: policies[1].schedule.every: invalid duration '30x': use 10s, 15m, 12h, 30d, 2w",
        "p.yaml:11: policies[1].shedule: unknown field 'shedule'; did you mean 'schedule'?",
    ]


def test_missing_field_points_at_the_policy() -> None:
    errors = errors_of(
        """\
        policies:
          - name: first
            secrets: [a]
            kind: random
            schedule: {every: 1d}
          - name: second
            secrets: [b]
            schedule: {every: 1d}
        """
    )
    assert errors == ["p.yaml:6: policies[1].kind: required field is missing"]


def test_nested_target_error_line() -> None:
    errors = errors_of(
        """\
        name: db
        secret: db
        kind: postgres
        schedule: {every: 90d}
        target:
          mode: alternating
          admin_secret: db_admin
          conect_timeout: 5
        """
    )
    assert errors == [
        "p.yaml:8: target.conect_timeout: unknown field 'conect_timeout'; "
        "did you mean 'connect_timeout'?"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("policies: [\n  {name: a\n", "p.yaml:3: invalid YAML"),
        ("a: 1\na: 2\n", "p.yaml:2: a: duplicate key 'a' (first at line 1)"),
        ("", "p.yaml:1: the file is empty"),
        ("- 1\n- 2\n", "p.yaml:1: expected a policy mapping"),
        ("just text", "p.yaml:1: expected a policy mapping"),
        ("policies: {}\n", "p.yaml:1: policies: expected a non-empty list"),
        ("policies: []\nversion: 1\n", "p.yaml:2: version: unknown top-level key"),
        ("policies: [5]\n", "p.yaml:1: policies[0]: expected a policy mapping"),
        ("a: &x [*x]\n", "recursive alias"),
        ("a: 2024-02-30\n", "p.yaml:1: a: invalid value"),
        ("a: !!python/object:os.system x\n", "p.yaml:1: a: invalid value"),
        ("a: !custom {b: 1}\n", "unsupported YAML tag"),
        ("--- 1\n--- 2\n", "p.yaml:2: invalid YAML"),
        ("[" * 5000, "nested"),
    ],
)
def test_bad_documents(text: str, expected: str) -> None:
    with pytest.raises(PolicyFileError) as caught:
        load_policy_text(text, "p.yaml")
    assert expected in str(caught.value.errors[0])


def test_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    with pytest.raises(PolicyFileError, match="YAML nodes"):
        load_policy_text("\n".join(lines))


def test_merge_keys_work() -> None:
    policies = load_policy_text(
        "policies:\n"
        "  - &base {name: a, secrets: [a], kind: random, schedule: {every: 7d}}\n"
        "  - {<<: *base, name: b, secrets: [b]}\n"
    )
    assert [p.name for p in policies] == ["a", "b"]
    assert policies[1].interval == timedelta(days=7)


def test_unreadable_and_invalid_utf8(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"name: \xff\xfe\x00x\n")
    with pytest.raises(PolicyFileError) as caught:
        load_policy_file(bad)
    assert caught.value.errors[0].file == str(bad)
    with pytest.raises(PolicyFileError, match="cannot read"):
        load_policy_file(tmp_path / "missing.yaml")


def test_whole_file_refused_and_other_files_load(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yaml",
        """\
        policies:
          - {name: good, secrets: [x], kind: random, schedule: {every: 1d}}
          - {name: bad, secrets: [y], kind: nope, schedule: {every: 1d}}
        """,
    )
    write(tmp_path, "b.yml", "{name: other, secret: z, kind: random, schedule: {every: 1d}}")
    write(tmp_path, ".hidden.yaml", "not: a policy")
    write(tmp_path, "notes.txt", "ignored")
    result = load_policies(tmp_path)
    assert [p.name for p in result.policies] == ["other"]
    assert [e.field for e in result.errors] == ["policies[1].kind"]
    assert [f.name for f in result.files] == ["a.yaml", "b.yml"]
    assert not result.ok


def test_duplicate_names_refuse_the_later_file(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "{name: same, secret: x, kind: random, schedule: {every: 1d}}")
    write(tmp_path, "b.yaml", "\n{name: same, secret: y, kind: random, schedule: {every: 1d}}")
    result = load_policies(tmp_path)
    assert [p.source for p in result.policies] == [f"{tmp_path / 'a.yaml'}:1"]
    [error] = result.errors
    assert error == PolicyError(
        str(tmp_path / "b.yaml"),
        2,
        "name",
        f"policy 'same' is already defined at {tmp_path}/a.yaml:1",
    )


def test_refused_file_claims_nothing(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "{name: same, secret: x, kind: bad, schedule: {every: 1d}}")
    write(tmp_path, "b.yaml", "{name: same, secret: x, kind: random, schedule: {every: 1d}}")
    result = load_policies(tmp_path)
    assert [p.name for p in result.policies] == ["same"]
    assert len(result.errors) == 1


def test_same_exact_secret_in_two_policies_is_an_error() -> None:
    errors = errors_of(
        """\
        policies:
          - {name: a, secrets: [db], kind: random, schedule: {every: 1d}}
          - {name: b, secret: db, kind: random, schedule: {every: 1d}}
        """
    )
    assert errors == ["p.yaml:3: policies[1].secret: 'db' is already claimed by policy 'a'"]


def test_load_policies_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="not found"):
        load_policies(tmp_path / "nope")
    monkeypatch.setenv("KEYTURN_SCHEDULES", str(tmp_path))
    assert default_schedules_dir() == tmp_path
    assert load_policies().policies == []
    monkeypatch.delenv("KEYTURN_SCHEDULES")
    assert default_schedules_dir() == Path("schedules")


def test_policy_file_error_is_a_configuration_error() -> None:
    error = PolicyFileError(
        [PolicyError("f.yaml", 3, "a.b", "bad"), PolicyError("f", None, "", "x")]
    )
    assert isinstance(error, ConfigurationError)
    assert error.message == "f.yaml:3: a.b: bad (and 1 more)"
    assert str(error.errors[1]) == "f: x"


# --- resolving secrets to policies -----------------------------------------------------------


def test_resolve_exact_beats_glob() -> None:
    globbed = policy(name="all", secrets=["api_key_*"])
    special = policy(name="special", secrets=["api_key_special"])
    resolved = resolve_secret_policies([globbed, special], ["api_key_a", "api_key_special", "x"])
    assert resolved == {"api_key_a": globbed, "api_key_special": special}


def test_resolve_reports_conflicts_and_keeps_the_rest() -> None:
    one = policy(name="one", secrets=["api_*"])
    two = policy(name="two", secrets=["*_key_*"])
    with pytest.raises(PolicyConflictError) as caught:
        resolve_secret_policies([one, two], ["api_key_x", "api_other"])
    assert caught.value.conflicts == {"api_key_x": ("one", "two")}
    assert caught.value.resolved == {"api_other": one}
    assert "'api_key_x' by 'one', 'two'" in caught.value.message


# --- arbitrary YAML never crashes the loader -------------------------------------------------

FIELDS = [
    "name", "secret", "secrets", "provider", "kind", "schedule", "every", "cron", "window",
    "days", "start", "end", "jitter", "retire_after", "restart", "strategy", "generator",
    "length", "classes", "prefix", "exclude", "target", "mode", "admin_secret", "users",
    "connect_timeout", "issuer", "max_attempts", "paused", "policies",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["30d", "1h", "0 3 * * 0", "02:00", "22:00", "mon", "random", "postgres"]),
)
keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=8), st.integers(), st.booleans())
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(keys, inner, max_size=8)),
    max_leaves=40,
)


def check_never_crashes(path: Path) -> None:
    try:
        policies = load_policy_file(path)
    except PolicyFileError as exc:
        assert exc.errors
        for error in exc.errors:
            assert error.file == str(path)
            assert error.line is None or error.line >= 1
            assert str(error)
    else:
        assert all(isinstance(p, Policy) for p in policies)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=documents)
def test_random_yaml_structures_never_crash(tmp_path: Path, data: object) -> None:
    path = tmp_path / "random.yaml"
    path.write_text(yaml.safe_dump(data))
    check_never_crashes(path)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.text(
        alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"#%@`, \n\t0123456789")), max_size=80
    )
)
def test_random_yaml_text_never_crashes(tmp_path: Path, text: str) -> None:
    path = tmp_path / "random.yaml"
    path.write_text(text)
    check_never_crashes(path)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=64))
def test_random_bytes_never_crash(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "random.yaml"
    path.write_bytes(raw)
    check_never_crashes(path)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    overrides=st.dictionaries(st.sampled_from(FIELDS), documents, max_size=4),
    drop=st.sets(st.sampled_from(list(MINIMAL))),
)
def test_mutated_policies_never_crash(
    tmp_path: Path, overrides: dict[str, object], drop: set[str]
) -> None:
    data = {k: v for k, v in {**MINIMAL, **overrides}.items() if k not in drop}
    path = tmp_path / "random.yaml"
    other = {**MINIMAL, "name": "other", "secrets": ["other"]}
    path.write_text(yaml.safe_dump({"policies": [data, other]}))
    check_never_crashes(path)


def test_duplicate_name_in_one_file() -> None:
    errors = errors_of(
        """\
        policies:
          - {name: a, secrets: [x], kind: random, schedule: {every: 1d}}
          - {name: a, secrets: [y], kind: random, schedule: {every: 1d}}
        """
    )
    assert errors == ["p.yaml:3: policies[1].name: policy 'a' is already defined at p.yaml:2"]
