"""Roles: the permission matrix, require_role, acting_as, bindings files, and the
SecretsManager's checks and audit events (in-memory sink; the ledger is in test_audit.py)."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from rotation import (
    AuditWriteFailed,
    PermissionDenied,
    Role,
    SecretsManager,
    acting_as,
    current_principal,
    require_role,
)
from rotation.access import audit as audit_module
from rotation.access import roles
from rotation.access.audit import AuditEvent, MemoryAuditSink
from rotation.access.roles import ROLE_PERMISSIONS, Bindings, Permission, Principal
from rotation.errors import ConfigurationError, SecretNotFound
from rotation.providers.memory import MemoryProvider

P = Permission


@pytest.fixture(autouse=True)
def clean_roles(monkeypatch):
    for var in ("KEYTURN_ROLES_FILE", "KEYTURN_ACTOR", "KEYTURN_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KEYTURN_AUDIT", "log")
    roles.reset()
    audit_module.reset_default_sink()
    yield
    roles.reset()
    audit_module.reset_default_sink()


@pytest.fixture
def sink() -> MemoryAuditSink:
    return MemoryAuditSink()


@pytest.fixture
def manager(sink):
    provider = MemoryProvider()
    provider.write("api_key", "sk-unit-value")
    provider.write("db_password", "pw-unit-value")
    m = SecretsManager(provider, cache_ttl=300, audit=sink)
    yield m
    m.close()


# --- the matrix -------------------------------------------------------------------------------


def test_permission_matrix() -> None:
    assert ROLE_PERMISSIONS == {
        Role.VIEWER: {P.LIST},
        Role.ANALYST: {P.LIST, P.READ},
        Role.OPERATOR: {P.LIST, P.READ, P.ROTATE},
        Role.ADMIN: {P.LIST, P.READ, P.ROTATE, P.WRITE, P.DELETE, P.AUDIT},
        Role.SUPER_ADMIN: set(Permission),
    }


def test_roles_are_ordered_and_parsed() -> None:
    assert Role.VIEWER < Role.ANALYST < Role.OPERATOR < Role.ADMIN < Role.SUPER_ADMIN
    assert Role.ADMIN >= Role.ADMIN and not Role.ANALYST >= Role.OPERATOR
    assert Role.parse("Super-Admin") is Role.SUPER_ADMIN
    with pytest.raises(ConfigurationError, match=r"Unknown role 'root'.*super_admin"):
        Role.parse("root")
    with pytest.raises(TypeError):
        _ = Role.ADMIN >= "admin"  # type: ignore[operator]


# --- require_role -----------------------------------------------------------------------------


@require_role(Role.SUPER_ADMIN)
def rotate_all_secrets(x: int) -> int:
    """Only super admins can rotate secrets."""
    return x * 2


@require_role(Role.ANALYST)
def get_api_keys() -> str:
    return "keys"


def test_require_role_keeps_metadata() -> None:
    assert rotate_all_secrets.__name__ == "rotate_all_secrets"
    assert rotate_all_secrets.__doc__ == "Only super admins can rotate secrets."
    assert rotate_all_secrets.__wrapped__.__name__ == "rotate_all_secrets"  # type: ignore[attr-defined]
    assert rotate_all_secrets.required_role is Role.SUPER_ADMIN  # type: ignore[attr-defined]


def test_without_bindings_roles_are_not_enforced() -> None:
    assert rotate_all_secrets(2) == 4
    with acting_as("anyone"):  # a name alone: no role known, nothing enforced
        assert rotate_all_secrets(3) == 6


def test_bindings_enforce_at_least_the_role(caplog) -> None:
    roles.configure({"alice": "admin", "root": "super_admin", "*": "viewer"})
    with acting_as("root"):
        assert rotate_all_secrets(1) == 2
    with acting_as("alice"):
        assert get_api_keys() == "keys"
        with caplog.at_level(logging.INFO, logger="keyturn.audit"):
            with pytest.raises(PermissionDenied) as denied:
                rotate_all_secrets(1)
    message = denied.value.message
    assert "'alice'" in message and "role: admin" in message
    assert "super_admin or above" in message and "rotate_all_secrets" in message
    # audited through the process's sink (KEYTURN_AUDIT=log here)
    assert [r.action for r in caplog.records] == ["permission.denied"]
    with acting_as("mallory"), pytest.raises(PermissionDenied, match="role: viewer"):
        get_api_keys()


def test_unknown_principal_without_star_may_do_nothing() -> None:
    roles.configure({"alice": "admin"})
    with acting_as("mallory"), pytest.raises(PermissionDenied, match="role: none"):
        get_api_keys()


def test_explicit_role_enforces_without_bindings() -> None:
    with acting_as(Principal("carol", Role.ANALYST)):
        assert get_api_keys() == "keys"
        with pytest.raises(PermissionDenied, match="'carol'"):
            rotate_all_secrets(1)
    with acting_as("dave", role="super-admin"):
        assert rotate_all_secrets(1) == 2
    assert rotate_all_secrets(5) == 10  # no role known outside the blocks


def test_default_principal_is_keyturn_actor(monkeypatch) -> None:
    monkeypatch.setenv("KEYTURN_ACTOR", "ci-bot")
    assert current_principal() == Principal("ci-bot")
    roles.configure({"ci-bot": "operator"})
    assert roles.role_of(current_principal()) is Role.OPERATOR
    assert get_api_keys() == "keys"
    with pytest.raises(PermissionDenied, match="'ci-bot'"):
        rotate_all_secrets(1)
    with acting_as("alice") as principal:
        assert current_principal() is principal
    assert current_principal().name == "ci-bot"


def test_acting_as_is_per_thread_context() -> None:
    seen: list[str] = []
    with acting_as("alice"):
        worker = threading.Thread(target=lambda: seen.append(current_principal().name))
        worker.start()
        worker.join()
        assert current_principal().name == "alice"
    assert seen and seen[0] != "alice"


def test_require_role_on_a_coroutine() -> None:
    @require_role(Role.ADMIN)
    async def purge() -> str:
        return "purged"

    assert asyncio.run(purge()) == "purged"

    async def as_viewer() -> str:
        with acting_as("v", Role.VIEWER):
            return await purge()

    with pytest.raises(PermissionDenied):
        asyncio.run(as_viewer())


# --- bindings files ---------------------------------------------------------------------------


def test_bindings_file_from_env(tmp_path, monkeypatch) -> None:
    path = tmp_path / "roles.yaml"
    path.write_text('bindings:\n  alice: admin\n  ci-bot: operator\n  "*": viewer\n')
    monkeypatch.setenv("KEYTURN_ROLES_FILE", str(path))
    roles.ensure_configured()
    assert roles.GUARD.on
    bindings = roles.GUARD.bindings
    assert bindings is not None
    assert bindings.role_of("ci-bot") is Role.OPERATOR and bindings.role_of("x") is Role.VIEWER


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("bindings:\n  alice: wizard\n", "binding 'alice': Unknown role 'wizard'"),
        ("alice: admin\n", "expected a mapping 'bindings:"),
        ("bindings: [alice]\n", "expected a mapping 'bindings:"),
        ("bindings:\n  alice: [admin]\n", "two strings"),
        ("bindings: {alice: admin\n", ":2: not valid YAML"),
    ],
)
def test_bad_bindings_files(tmp_path, text: str, fragment: str) -> None:
    path = tmp_path / "roles.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as error:
        Bindings.load(path)
    assert fragment in error.value.message and "roles.yaml" in error.value.message


def test_missing_bindings_file_is_an_error_not_off(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("KEYTURN_ROLES_FILE", str(tmp_path / "absent.yaml"))
    with pytest.raises(ConfigurationError, match="KEYTURN_ROLES_FILE"):
        SecretsManager(MemoryProvider())


# --- SecretsManager checks --------------------------------------------------------------------

OPERATIONS = {
    "list": (P.LIST, lambda m: m.list()),
    "versions": (P.LIST, lambda m: m.versions("api_key")),
    "get": (P.READ, lambda m: m.get("api_key")),
    "get_many": (P.READ, lambda m: m.get_many(["api_key", "db_password"])),
    "set": (P.WRITE, lambda m: m.set("new_key", "v")),
    "set_many": (P.WRITE, lambda m: m.set_many({"a": "1", "b": "2"})),
    "delete": (P.DELETE, lambda m: m.delete("db_password")),
    "rotate": (P.ROTATE, lambda m: m.rotate("api_key")),
    "rotate_all": (P.ROTATE_ALL, lambda m: m.rotate_all("api_")),
}


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_manager_checks_each_operation(manager, sink, role: Role, operation: str) -> None:
    roles.configure({"someone": role.value})
    permission, call = OPERATIONS[operation]
    with acting_as("someone"):
        if permission in ROLE_PERMISSIONS[role]:
            call(manager)
            assert "permission.denied" not in [e.action for e in sink.events]
        else:
            with pytest.raises(PermissionDenied, match=f"'{permission.value}' permission"):
                call(manager)
            denial = sink.events[-1]
            assert (denial.action, denial.actor, denial.outcome) == (
                "permission.denied",
                "someone",
                "denied",
            )


def test_denied_cache_hit_is_still_denied(manager, sink) -> None:
    manager.get("api_key")  # cached, roles off
    with acting_as("v", Role.VIEWER), pytest.raises(PermissionDenied):
        manager.get("api_key")
    assert sink.events[-1].action == "permission.denied"
    assert sink.events[-1].secret == "api_key"


def test_set_many_is_all_or_nothing_on_permissions(manager) -> None:
    roles.configure({"op": "operator"})
    with acting_as("op"), pytest.raises(PermissionDenied):
        manager.set_many({"x": "1", "y": "2"})
    assert manager.provider.list("") == ["api_key", "db_password"]


# --- SecretsManager audit events --------------------------------------------------------------


def _actions(sink: MemoryAuditSink) -> list[tuple[str, str, str | None]]:
    return [(e.action, e.outcome, e.secret) for e in sink.events]


def test_operations_are_audited_without_values(manager, sink) -> None:
    with acting_as("alice"):
        version = manager.set("db_password", "pw-new-value")
        manager.get("db_password")
        manager.get("db_password")  # a cache hit: not audited
        manager.get("api_key", use_cache=False)
        rotated = manager.rotate("api_key")
        with pytest.raises(SecretNotFound):
            manager.get("missing")
        manager.delete("db_password")
    assert _actions(sink) == [
        ("secret.set", "started", "db_password"),
        ("secret.set", "ok", "db_password"),
        ("secret.get", "ok", "db_password"),
        ("secret.get", "ok", "api_key"),
        ("secret.rotate", "started", "api_key"),
        ("secret.rotate", "ok", "api_key"),
        ("secret.get", "error:SecretNotFound", "missing"),
        ("secret.delete", "started", "db_password"),
        ("secret.delete", "ok", "db_password"),
    ]
    assert {e.actor for e in sink.events} == {"alice"}
    assert sink.events[1].version_id == version == sink.events[2].version_id
    text = repr(sink.events)
    for value in ("pw-new-value", "sk-unit-value", rotated):
        assert value not in text


def test_get_many_audits_misses_as_the_caller(manager, sink) -> None:
    manager.get("api_key")
    sink.events.clear()
    with acting_as("batch-user"):
        manager.get_many(["api_key", "db_password", "db_password"])
        with pytest.raises(SecretNotFound):
            manager.get_many(["nope", "nada"])
    assert sorted(_actions(sink)) == [
        ("secret.get", "error:SecretNotFound", "nada"),
        ("secret.get", "error:SecretNotFound", "nope"),
        ("secret.get", "ok", "db_password"),
    ]
    # misses fetched on pool threads still act as the caller
    assert {e.actor for e in sink.events} == {"batch-user"}


def test_rotate_all_is_audited_with_a_summary(manager, sink) -> None:
    manager.rotate_all("*")
    assert sink.events[0].action == "secret.rotate_all"
    summary = sink.events[-1]
    assert summary.action == "secret.rotate_all" and summary.outcome == "ok"
    assert summary.detail == "pattern '*': 2 rotated, 0 failed"
    assert [e.secret for e in sink.events if e.action == "secret.rotate"] == [
        "api_key",
        "api_key",
        "db_password",
        "db_password",
    ]


class BrokenSink:
    def __init__(self) -> None:
        self.calls = 0

    def write(self, event: AuditEvent) -> None:
        self.calls += 1
        raise AuditWriteFailed(f"ledger down while writing {event.action}")

    def close(self) -> None:
        pass


def test_writes_fail_closed_when_the_audit_is_down() -> None:
    provider = MemoryProvider()
    manager = SecretsManager(provider, audit=BrokenSink())
    with pytest.raises(AuditWriteFailed):
        manager.set("db_password", "pw-never-written")
    with pytest.raises(AuditWriteFailed):
        manager.rotate_all()
    assert provider.list() == []


def test_reads_fail_open_and_log_no_value(caplog) -> None:
    provider = MemoryProvider()
    provider.write("db_password", "pw-read-anyway")
    sink = BrokenSink()
    manager = SecretsManager(provider, audit=sink)
    with caplog.at_level(logging.ERROR, logger="keyturn.audit"):
        assert manager.get("db_password") == "pw-read-anyway"
    assert sink.calls == 1
    assert "audit record not written" in caplog.text
    assert "pw-read-anyway" not in caplog.text


def test_cache_hit_path_does_not_consult_roles_when_off(manager) -> None:
    manager.get("api_key")
    assert not roles.GUARD.on
    with acting_as("someone"):  # a name alone does not switch enforcement on
        assert manager.get("api_key") == "sk-unit-value"
    assert not roles.GUARD.on
