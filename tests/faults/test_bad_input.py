"""Bad input gets a clear error and nothing half-written (docs/reliability.md, "Bad input").

- policy files: Hypothesis-generated near-valid files (wrong types, unknown keys, bad durations,
  crons and windows, huge numbers, unicode, deep nesting, duplicate keys, anchors, broken YAML)
  only ever give errors naming the file and the field; the valid file beside them always loads,
  and the dispatcher keeps starting its runs;
- secret names: path traversal, control characters, Vault path tricks and SQL metacharacters are
  refused with InvalidSecretName by SecretsManager on every backend and by the CLI, before any
  backend sees them; any text is either a valid name that round-trips or InvalidSecretName;
- Postgres role names: a secret whose username is ``app"; DROP ROLE victim; --`` rotates that
  literal role or fails cleanly; the victim role survives.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from psycopg import sql
from sqlalchemy import select

from rotation import SecretsManager
from rotation.cli import main
from rotation.errors import InvalidSecretName
from rotation.ledger.models import PolicyRow, Run, Schedule
from rotation.names import validate_name
from rotation.policy import PolicySet, load_policies
from rotation.providers.local import LocalProvider, generate_key
from rotation.providers.memory import MemoryProvider
from tests.integration.test_engine import Clock, drive, make

# --- policy files ------------------------------------------------------------------------------

VALID = """
policies:
  - name: fixed-valid
    secrets: ["fixed/key_*", fixed/other]
    kind: random
    schedule: {every: 30d}
    window: {days: [mon, tue], start: "02:00", end: "05:00"}
    retire_after: 1h
"""

BASE: dict[str, Any] = {
    "name": "generated",
    "secrets": ["gen/key_*", "gen/other"],
    "kind": "random",
    "schedule": {"every": "30d"},
    "window": {"days": ["mon", "fri"], "start": "01:00", "end": "04:00"},
    "jitter": "1h",
    "retire_after": "10m",
    "restart": {"strategy": "none"},
    "generator": {"length": 40, "prefix": "sk-"},
    "max_attempts": 5,
    "paused": False,
}
POSTGRES_TARGET = {"mode": "alternating", "admin_secret": "db/admin", "users": ["a", "b"]}
FIELDS = [*BASE, "secret", "target", "provider"]
NESTED = {
    "schedule": ["every", "cron"],
    "window": ["days", "start", "end"],
    "generator": ["length", "classes", "prefix", "exclude"],
    "restart": ["strategy", "timeout", "on_timeout", "commands", "url", "hmac_secret", "waves"],
    "target": ["issuer", "mode", "admin_secret", "users", "connect_timeout"],
}

odd_text = st.text(
    st.characters(blacklist_categories=("Cs",)), max_size=30
)  # any unicode but lone surrogates (which cannot be written as UTF-8)
durations = st.one_of(
    st.sampled_from(
        [
            "30x",
            "-1d",
            "1d2w",
            "0s",
            "1y",
            "99999999999999d",
            "",
            " ",
            "1h 30m",
            "P1D",
            "²d",
            "٣d",
            "1e3",
            "1.5h",
            "00",
            "1h30m",
            "36501d",
            "inf",
            "NaN",
            "3 d",
        ]
    ),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    odd_text,
)
crons = st.one_of(
    st.sampled_from(
        [
            "* * * * * *",
            "0 0 31 2 *",
            "@reboot",
            "@yearly",
            "H * * * *",
            "R R * * *",
            "61 * * * *",
            "* * * *",
            "0 3 * * 0",
            "*/0 * * * *",
            "0 0 30 2 *",
            "L * * * *",
            "0 0 * * 8",
            "@every 5m",
            "0 0 1 1 * 2099",
            "a b c d e",
        ]
    ),
    st.lists(
        st.sampled_from(["*", "0", "*/5", "1-3", "60", "-1", "L", "W", "?", "#", "a"]),
        min_size=3,
        max_size=7,
    ).map(" ".join),
    odd_text,
)
times = st.one_of(
    st.sampled_from(["24:00", "25:61", "2:00", "02:00", "23:59", "-1:00", "02:00:00", "noon", ""]),
    st.integers(min_value=-100_000, max_value=100_000),
    odd_text,
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    odd_text,
    st.sampled_from(["yes", "no", "on", "~", "null", "0x1F", "0o17", "1_000", "2024-02-30"]),
)
junk = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(odd_text, inner, max_size=3),
    max_leaves=8,
)


def _field_values(field: str) -> st.SearchStrategy[Any]:
    specific: dict[str, st.SearchStrategy[Any]] = {
        "schedule": st.one_of(
            st.fixed_dictionaries({"every": durations}),
            st.fixed_dictionaries({"cron": crons}),
            st.fixed_dictionaries({"every": durations, "cron": crons}),
            st.just({}),
        ),
        "window": st.fixed_dictionaries(
            {},
            optional={
                "days": st.one_of(
                    st.lists(st.sampled_from(["mon", "Monday", "funday", "", "sun", "tues"])),
                    odd_text,
                ),
                "start": times,
                "end": times,
            },
        ),
        "jitter": durations,
        "retire_after": durations,
        "max_attempts": st.one_of(st.integers(min_value=-(10**30), max_value=10**30), scalars),
        "name": st.one_of(odd_text, st.sampled_from(["fixed-valid", "UPPER", "-x", "a" * 101])),
        "secrets": st.one_of(
            st.lists(
                st.one_of(
                    odd_text,
                    st.sampled_from(
                        [
                            "../etc",
                            "fixed/other",
                            "gen/key_*",
                            "a//b",
                            "[!",
                            "x" * 201,
                            "*",
                            "a b",
                            "%2e%2e",
                            "data/../x",
                            "fixed/key_*",
                        ]
                    ),
                ),
                max_size=4,
            ),
            scalars,
        ),
        "kind": st.one_of(st.sampled_from(["random", "postgres", "ranodm", "Random", ""]), scalars),
        "provider": st.one_of(st.sampled_from(["vault", "valt", "local", "memory", "s3"]), scalars),
        "restart": st.one_of(
            st.fixed_dictionaries(
                {
                    "strategy": st.sampled_from(
                        ["none", "acknowledge", "command", "webhook", "waves", "reboot"]
                    )
                },
                optional={k: junk for k in NESTED["restart"][1:]},
            ),
            scalars,
        ),
        "generator": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "length": st.integers(min_value=-(10**20), max_value=10**20),
                    "classes": st.dictionaries(
                        st.sampled_from(["lower", "upper", "digits", "symbols", "emoji"]),
                        st.integers(min_value=-5, max_value=10**9),
                    ),
                    "prefix": odd_text,
                    "exclude": odd_text,
                },
            ),
            scalars,
        ),
        "target": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "mode": st.sampled_from(["single", "alternating", "both"]),
                    "admin_secret": st.one_of(odd_text, st.just("db/admin")),
                    "users": st.lists(st.one_of(odd_text, st.sampled_from(['a"b', "x", "x"]))),
                    "issuer": st.one_of(odd_text, st.just("os:system")),
                    "connect_timeout": scalars,
                },
            ),
            scalars,
        ),
    }
    return st.one_of(specific.get(field, scalars), junk)


@st.composite
def mutated_policy(draw: st.DrawFn) -> Any:
    """A valid policy, then 1-4 mutations: wrong values, missing or unknown keys, odd shapes."""
    policy: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    if draw(st.booleans()):
        policy.update(kind="postgres", target=dict(POSTGRES_TARGET))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        action = draw(st.sampled_from(["set", "set", "set", "drop", "unknown", "nested"]))
        field = draw(st.sampled_from(FIELDS))
        if action == "set":
            policy[field] = draw(_field_values(field))
        elif action == "drop":
            policy.pop(field, None)
        elif action == "unknown":
            policy[draw(st.one_of(odd_text, st.sampled_from(["secert", "schedul", "on"])))] = draw(
                junk
            )
        else:
            parent = draw(st.sampled_from(sorted(NESTED)))
            block = policy.get(parent)
            block = dict(block) if isinstance(block, dict) else {}
            block[draw(st.one_of(st.sampled_from(NESTED[parent] + ["typo"]), odd_text))] = draw(
                junk
            )
            policy[parent] = block
    shape = draw(st.sampled_from(["list", "list", "single", "many", "bare-list", "scalar"]))
    if shape == "list":
        return {"policies": [policy]}
    if shape == "single":
        return policy
    if shape == "many":
        return {
            "policies": [policy, dict(policy), draw(junk)],
            **draw(st.dictionaries(st.sampled_from(["version", "policy"]), junk, max_size=1)),
        }
    if shape == "bare-list":
        return [policy]
    return draw(scalars)


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)
RAW_DOCUMENTS = [
    "",
    "   \n# only a comment\n",
    ALIAS_BOMB + "policies: [*i]\n",
    "policies: &p [*p]\n",
    "base: &b {kind: random}\npolicies: [{<<: *b, name: x, secret: y, schedule: {every: 1d}}]\n",
    "policies:\n  - name: a\n    name: b\n    secret: x\n    kind: random\n"
    "    schedule: {every: 1d}\n",
    "!!python/object/apply:os.system [echo pwned]\n",
    "policies: [!!binary aGVsbG8=]\n",
    "policies: [{name: x, secret: y, kind: random, schedule: {every: !!float 1e400}}]\n",
    "? [a, b]\n: c\n",
    "? {a: b}\n: c\n",
    "policies:\n" + "  " + "[" * 200 + "]" * 200 + "\n",
    "[" * 5000 + "]" * 5000,
    "policies: [{name: x, secret: y, kind: random, schedule: {every: 1d}}]\n---\nsecond: doc\n",
    "\t- tab",
    "a: 'unterminated\n",
    "policies: [{name: x, secret: y, kind: random, schedule: {every: 1d}, when: 2024-02-30}]\n",
    "{name: 22:00, secret: y, kind: random, schedule: {every: 1d}}",
    "null: 1\n1: 2\ntrue: 3\n",
    "%YAML 1.1\n%TAG ! tag:evil.com,2000:\n---\n!x {a: b}\n",
]


def yaml_text(data: Any) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


@st.composite
def policy_file(draw: st.DrawFn) -> bytes:
    """The bytes of one generated policy file."""
    kind = draw(st.sampled_from(["yaml"] * 6 + ["text-mutated", "raw", "raw-spliced"]))
    if kind == "raw":
        return draw(st.sampled_from(RAW_DOCUMENTS)).encode()
    if kind == "raw-spliced":
        base = draw(st.sampled_from(RAW_DOCUMENTS))
        return (yaml_text(draw(mutated_policy())) + "\n" + base).encode()
    text = yaml_text(draw(mutated_policy()))
    if kind == "text-mutated":
        lines = text.splitlines(keepends=True)
        for _ in range(draw(st.integers(min_value=1, max_value=3))):
            how = draw(st.sampled_from(["truncate", "insert", "duplicate", "indent", "control"]))
            at = draw(st.integers(min_value=0, max_value=max(0, len(lines) - 1)))
            if how == "truncate":
                cut = draw(st.integers(min_value=0, max_value=len(text)))
                lines = "".join(lines)[:cut].splitlines(keepends=True)
            elif how == "insert":
                lines.insert(
                    at, draw(st.sampled_from(["}", "]", ": :", "&", "*nope", "- ", "'"])) + "\n"
                )
            elif how == "duplicate" and lines:
                lines.insert(at, lines[at])  # a duplicate key, usually
            elif how == "indent" and lines:
                lines[at] = draw(st.sampled_from(["\t", "   ", " "])) + lines[at]
            elif how == "control" and lines:
                lines[at] = lines[at].rstrip("\n") + draw(
                    st.sampled_from(["\x01", "\x7f", "\ufeff", "\x85"])
                )
                lines[at] += "\n"
            if not lines:
                break
        text = "".join(lines)
    encoding = draw(st.sampled_from(["utf-8"] * 8 + ["utf-16", "latin-1"]))
    return text.encode(encoding, errors="replace")


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("policies")
    (root / "00-valid.yaml").write_text(VALID)
    return root


def assert_clean(result: PolicySet, generated: Path) -> None:
    """The valid file loads; every error is the generated file's, located to a field or line."""
    assert result.get("fixed-valid") is not None, [str(e) for e in result.errors]
    for error in result.errors:
        assert error.file == str(generated), error
        assert isinstance(error.message, str) and error.message.strip(), error
        if not error.field and error.line is None:
            # whole-file problems PyYAML reports without a line (see the xfail test below)
            assert error.message.startswith(LINELESS), error
            STATS["lineless"] += 1
        assert str(error).startswith(str(generated)), error
    if result.errors:
        assert not [p for p in result.policies if p.source and str(generated) in p.source]


STATS: dict[str, int] = {"files": 0, "refused": 0, "accepted": 0, "errors": 0, "lineless": 0}
#: The whole-file errors that come without a line today.
LINELESS = ("invalid YAML: unacceptable character", "YAML nested too deeply")


@settings(
    max_examples=1000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(content=policy_file())
def test_generated_policy_files_give_located_errors_never_a_crash(
    policy_dir: Path, content: bytes
) -> None:
    generated = policy_dir / "50-generated.yaml"
    generated.write_bytes(content)
    result = load_policies(policy_dir)  # any exception here is a crash: the test fails
    assert_clean(result, generated)
    STATS["files"] += 1
    STATS["refused" if result.errors else "accepted"] += 1
    STATS["errors"] += len(result.errors)


def test_generated_files_statistics(policy_dir: Path) -> None:
    """Most generated files must be refused (else the generator is too tame to prove
    anything). Reads what the property test counted; when another test process ran it (the
    suite runs in parallel), runs it here first."""
    if STATS["files"] == 0:
        test_generated_policy_files_give_located_errors_never_a_crash(policy_dir)
    print(f"\npolicy fuzz: {STATS}")
    assert STATS["files"] >= 1000
    assert STATS["refused"] >= STATS["files"] * 0.8, STATS
    assert STATS["accepted"] >= 1, STATS  # and valid shapes are not refused by accident


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (b"policies:\n  - name: x\n    secret: y\x01\n", 3),
        (b"policies:\n  - name: x\n    secret: " + b"[" * 3000 + b"]" * 3000 + b"\n", 3),
    ],
    ids=["control-character", "deep-nesting"],
)
def test_whole_file_yaml_errors_are_reported_with_a_line(
    tmp_path: Path, content: bytes, line: int
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    (error,) = load_policies(path).errors
    assert error.line is not None and error.line <= line, str(error)


BROKEN_FILES = {
    "10-syntax.yaml": "policies: [{name: a, secret: s/a\n",
    "20-bomb.yaml": ALIAS_BOMB + "policies: [*i]\n",
    "30-fields.yaml": (
        "policies:\n  - name: broken\n    secret: broken/key\n    kind: ranodm\n"
        "    schedule: {every: 30x}\n    window: {start: '25:00'}\n    max_attempts: 10000\n"
    ),
    "40-claims.yaml": (
        "policies:\n  - name: thief\n    secret: app/token\n    kind: random\n"
        "    schedule: {every: 1d}\n"
    ),
}
VALID_ENGINE = """
policies:
  - name: app
    secrets: [app/token]
    provider: memory
    kind: random
    schedule: {every: 30d}
    retire_after: 0s
  - name: later
    secrets: [app/later]
    provider: memory
    kind: random
    schedule: {every: 30d}
    retire_after: 0s
"""


def test_the_dispatcher_keeps_serving_valid_policies_beside_broken_files(
    ledger_url: str, tmp_path: Path
) -> None:
    schedules = tmp_path / "schedules"
    schedules.mkdir()
    (schedules / "00-app.yaml").write_text(VALID_ENGINE)
    for name, text in BROKEN_FILES.items():
        (schedules / name).write_text(text)
    backend = MemoryProvider()
    backend.write("app/token", "initial-token-value")
    backend.write("app/later", "initial-later-value")
    backend.write("broken/key", "never-rotated")
    clock = Clock()
    runtime, engine, dispatcher = make(ledger_url, backend, clock, schedules)
    try:
        report = dispatcher.tick()
        assert report.synced and report.started == 2
        assert {Path(e.file).name for e in report.errors} == set(BROKEN_FILES)
        for run_id, state in report.enqueue:
            drive(engine, run_id, state, clock, dispatcher)
        assert len(backend.versions("app/token")) == 2  # rotated, exactly once
        assert len(backend.versions("app/later")) == 2
        assert len(backend.versions("broken/key")) == 1  # its policy never loaded

        # a valid file that breaks later keeps its policies as they were; the others go on
        (schedules / "00-app.yaml").write_text(VALID_ENGINE.replace("every: 30d", "every: 30x"))
        (schedules / "05-more.yaml").write_text(
            "{name: more, secret: app/more, provider: memory, kind: random, "
            "schedule: {every: 30d}, retire_after: 0s}"
        )
        backend.write("app/more", "initial-more-value")
        clock.advance(days=1)
        report = dispatcher.tick()
        assert report.started == 1, report
        assert any(Path(e.file).name == "00-app.yaml" for e in report.errors)
        with runtime.ledger.sessions() as session:
            names = set(session.scalars(select(PolicyRow.name)))
            owner = session.scalar(
                select(Schedule.policy_name).where(Schedule.secret == "app/token")
            )
        # 00-app.yaml's claims no longer block 40-claims.yaml, which now loads; the secret it
        # claims stays with the policy that already governs it
        assert names == {"app", "later", "more", "thief"}
        assert owner == "app"
        for run_id, state in report.enqueue:
            drive(engine, run_id, state, clock, dispatcher)
        assert len(backend.versions("app/more")) == 2
        clock.advance(days=31)  # the broken file's policies still schedule, from the ledger
        report = dispatcher.tick()
        assert report.started == 3, report  # app/token, app/later (day 30), app/more (day 31)
    finally:
        runtime.close()


# --- secret names ------------------------------------------------------------------------------

BAD_NAMES = [
    "",
    "../etc/passwd",
    "a/../b",
    "..",
    ".",
    "a/./b",
    "/absolute",
    "trailing/",
    "a//b",
    ".hidden",
    "a\x00b",
    "a\nb",
    "line\r\nbreak",
    "tab\there",
    "bell\x07",
    "del\x7f",
    "esc\x1b[31mred",
    "a b",
    " leading",
    "x" * 201,
    "a?version=1",
    "a#fragment",
    "a%2e%2e/b",
    "%2e%2e",
    "secret/data/../../sys/seal",
    "sys/raw/../x?list=true",
    "kv/metadata/*",
    "a\\b",
    "x' OR '1'='1",
    'x"; DROP TABLE runs; --',
    "x;rm -rf /",
    "$(reboot)",
    "`id`",
    "a*b",
    "name[0]",
    "ünïcode",
    "\uff46\uff55\uff4c\uff4cwidth",
    "zero\u200bwidth",
    "rtl\u202eoverride",
    "emoji🔑",
    "a:b",
    "a@b",
    "a,b",
]


def test_bad_secret_names_are_refused_before_any_backend(provider) -> None:
    manager = SecretsManager(provider, cache_ttl=0)
    try:
        for name in BAD_NAMES:
            calls = [
                lambda n=name: manager.set(n, "value-that-must-not-be-written"),
                lambda n=name: manager.get(n),
                lambda n=name: manager.get(n, use_cache=False),
                lambda n=name: manager.versions(n),
                lambda n=name: manager.delete(n),
                lambda n=name: manager.rotate(n),
                lambda n=name: manager.set_many({"fine/name": "v-not-written", n: "v"}),
                lambda n=name: manager.get_many(["fine/name", n]),
            ]
            for call in calls:
                with pytest.raises(InvalidSecretName) as caught:
                    call()
                message = caught.value.message
                assert "\n" not in message and "\x00" not in message, repr(message)
                assert "value-that-must-not-be-written" not in message
        assert manager.list() == []  # nothing was written, not even set_many's valid name
    finally:
        manager.close()


def invoke(args: list[str], env: dict[str, str] | None = None, stdin: str | None = None):
    return CliRunner().invoke(main, args, input=stdin, env=env)


@pytest.mark.parametrize(
    "name", ["../etc/passwd", "a\nb", "a\x00b", 'x"; DROP TABLE runs; --', "a?version=1", ""]
)
def test_the_cli_refuses_bad_names_with_one_line(
    name: str, ledger_url: str, tmp_path: Path
) -> None:
    env = {
        "KEYTURN_DATABASE_URL": ledger_url,
        "SECRETS_PROVIDER": "local",
        "KEYTURN_LOCAL_DIR": str(tmp_path / "store"),
        "KEYTURN_LOCAL_KEY": generate_key(),
    }
    for args, stdin in [
        (["secrets", "set", name], "a-value-never-written"),
        (["secrets", "get", name], None),
        (["secrets", "versions", name], None),
        (["secrets", "delete", "--yes", name], None),
        (["rotate", name], None),
        (["rotate", name, "--wait", "--timeout", "1"], None),
        (["rollback", name], None),
        (["history", name], None),
    ]:
        result = invoke(args, env, stdin)
        assert result.exit_code == 2, (args, result.exit_code, result.output)  # bad usage
        assert not isinstance(result.exception, Exception) or isinstance(
            result.exception, SystemExit
        ), (args, repr(result.exception))
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
        assert "Invalid secret name" in lines[0] or "invalid" in lines[0].lower(), lines[0]
        assert "Traceback" not in result.output and result.stdout == "", (args, result.stdout)
        assert "a-value-never-written" not in result.output
    store = LocalProvider(tmp_path / "store", key=env["KEYTURN_LOCAL_KEY"])
    assert store.list() == []


SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,15}"
names = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(codec="ascii"), max_size=40),
    st.from_regex(rf"{SEGMENT}(/{SEGMENT}){{0,3}}", fullmatch=True),
    st.lists(
        st.text(string.ascii_letters + string.digits + "_.-/ %?*\\", max_size=8), max_size=4
    ).map("/".join),
)


@pytest.fixture(scope="module")
def name_providers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Any]]:
    local = LocalProvider(tmp_path_factory.mktemp("names"), key=generate_key())
    memory = MemoryProvider()
    yield [SecretsManager(memory, cache_ttl=0), SecretsManager(local, cache_ttl=0)]
    local.close()


VERDICTS: dict[str, int] = {"accepted": 0, "refused": 0}


@settings(max_examples=600, deadline=None, database=None)
@given(name=names)
def test_any_text_is_a_name_that_round_trips_or_invalid(name_providers, name: str) -> None:
    try:
        validate_name(name)
    except InvalidSecretName as exc:
        VERDICTS["refused"] += 1
        assert exc.message and "\n" not in exc.message
        for manager in name_providers:
            with pytest.raises(InvalidSecretName):
                manager.set(name, "refused")
        return
    VERDICTS["accepted"] += 1
    assume(len(name) <= 200)
    for manager in name_providers:
        value = f"value of {name}"
        version = manager.set(name, value)
        assert manager.get(name) == value
        assert name in manager.list()
        assert [v.version_id for v in manager.versions(name)][-1:] == [version] or any(
            v.version_id == version for v in manager.versions(name)
        )


def test_name_verdicts_cover_both_sides(name_providers: list[Any]) -> None:
    """Generated names hit both verdicts (else the generator proves nothing). When another
    test process ran the property test, it runs here first."""
    if not sum(VERDICTS.values()):
        test_any_text_is_a_name_that_round_trips_or_invalid(name_providers)
    print(f"\nname fuzz: {VERDICTS}")
    assert VERDICTS["accepted"] >= 50 and VERDICTS["refused"] >= 50, VERDICTS


# --- Postgres role names -----------------------------------------------------------------------

HOSTILE_ROLES = [
    'app"; DROP ROLE victim; --',
    "app'; DROP ROLE victim; --",
    'app""; DROP ROLE victim',
    "Robert'); DROP ROLE victim;--",
    "app$$; DROP ROLE victim; $$",
    "app\\'; DROP ROLE victim; --",
    "app\u0000; DROP ROLE victim",
    "app; DROP ROLE victim",
]


def policy_for(mode: str, index: int) -> str:
    target = (
        "{mode: alternating, admin_secret: db/admin, connect_timeout: 3}"
        if mode == "alternating"
        else "{mode: single, admin_secret: db/admin, connect_timeout: 3}"
    )
    return f"""
policies:
  - name: hostile-{index}
    secret: db/hostile_{index}
    provider: memory
    kind: postgres
    schedule: {{every: 30d}}
    retire_after: 0s
    consumer_cache_ttl: 0s   # no consumer caches it here (the defaults rule)
    max_attempts: 2
    target: {target}
"""


def roles(conn: psycopg.Connection[Any]) -> set[str]:
    return {r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname !~ '^pg_'")}


@pytest.mark.parametrize("mode", ["alternating", "single"])
def test_hostile_postgres_role_names_cannot_inject_sql(
    ledger_url: str, pg_database, tmp_path: Path, mode: str
) -> None:
    victim = pg_database.role("victim")
    with pg_database.admin_connect() as conn:
        conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(victim)))
        before = roles(conn)
    outcomes: list[tuple[str, str, str | None]] = []
    for index, template in enumerate(HOSTILE_ROLES):
        hostile = template.replace("victim", victim)
        password = f"first-password-{index}-hostile"
        created = "\x00" not in hostile
        if created:
            pg_database.track_role(hostile)
            pg_database.track_role(hostile + "_clone")
            with pg_database.admin_connect() as conn:
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(hostile), sql.Literal(password)
                    )
                )
                conn.execute(
                    sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                        sql.Identifier(pg_database.name), sql.Identifier(hostile)
                    )
                )
        backend = MemoryProvider()
        backend.write("db/admin", pg_database.admin_secret)
        backend.write(f"db/hostile_{index}", pg_database.credential(hostile, password))
        schedules = tmp_path / f"schedules-{mode}-{index}"
        schedules.mkdir()
        (schedules / "p.yaml").write_text(policy_for(mode, index))
        clock = Clock()
        runtime, engine, dispatcher = make(ledger_url, backend, clock, schedules, f"w{index}")
        try:
            ((run_id, state),) = dispatcher.tick().enqueue
            drive(engine, run_id, state, clock, dispatcher)
            with runtime.ledger.sessions() as session:
                run = session.get(Run, run_id)
                assert run is not None
                outcomes.append((hostile, run.state, run.last_error))
        finally:
            runtime.close()
        with pg_database.admin_connect() as conn:
            assert victim in roles(conn), f"{hostile!r} dropped the victim role"
        current = dict(backend.read(f"db/hostile_{index}").value)
        if run.state == "succeeded":
            # it rotated exactly the literal role (or its literal clone)
            expected = hostile if mode == "single" else hostile + "_clone"
            assert current["username"] == expected
            assert pg_database.accepts(current["username"], current["password"])
            if mode == "alternating":
                assert not pg_database.accepts(hostile, password)  # retired
        else:
            assert run.state in ("failed", "needs_attention"), run.state
            assert current["password"] == password  # rolled back: the old value is current
            assert password not in (run.last_error or "")
            if created and mode == "single":
                assert pg_database.accepts(hostile, password)  # still works
    with pg_database.admin_connect() as conn:
        after = roles(conn)
    expected_new = {t.replace("victim", victim) for t in HOSTILE_ROLES if "\x00" not in t}
    if mode == "alternating":
        expected_new |= {n + "_clone" for n in expected_new}
    assert before <= after and after - before <= expected_new, after - before
    print(f"\nhostile role names ({mode}):")
    for hostile, state, error in outcomes:
        print(f"  {hostile!r}: {state} {error or ''}"[:200])
    assert sum(1 for _, state, _ in outcomes if state == "succeeded") >= 5, outcomes
