"""The package's shape holds: its parts import downward only, the core never imports Celery or
``worker``, and every exception the package raises stands in the error tree
(docs/architecture.md)."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

import rotation
from rotation import errors

ROOT = Path(rotation.__file__).parent

#: The parts, lowest first; a part may import itself and the parts before it (docs/architecture.md).
LAYERS: list[tuple[str, ...]] = [
    (
        "errors",
        "values",
        "names",
        "generator",
        "durations",
        "schema",
        "config",
        "hosts",
        "registry",
        "rollout",
    ),
    ("ledger", "providers"),
    ("access", "rotators"),
    ("policy", "client"),
    ("run",),
    ("scheduler",),
    ("ops",),
    ("dashboard",),
    ("cli",),
]
#: The base modules: what every part may import.
BASE = LAYERS[0]
PART_RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module (of any package) ``name`` imports, at any depth of the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # ``from pkg import sub`` imports the module pkg.sub, else a name of pkg
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "rotation"


def test_every_part_is_placed() -> None:
    unplaced = {_part(m) for m in MODULES if m != "rotation"} - set(PART_RANK)
    assert not unplaced, f"place these parts in LAYERS and docs/architecture.md: {unplaced}"


def test_parts_import_downward_only() -> None:
    upward = []
    for module, imported in GRAPH.items():
        if module == "rotation":
            continue
        for target in imported:
            if not target.startswith("rotation.") or _part(target) == _part(module):
                continue
            if PART_RANK[_part(target)] > PART_RANK[_part(module)]:
                upward.append(f"{module} -> {target}")
    assert not upward, "\n".join(sorted(upward))


def test_no_import_circle() -> None:
    edges = {m: {t for t in ts if t in MODULES and t != m} for m, ts in GRAPH.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    assert not circles, circles


def test_the_core_imports_neither_celery_nor_worker() -> None:
    offenders = defaultdict(list)
    for module, imported in GRAPH.items():
        for target in imported:
            root = target.split(".")[0]
            if root == "worker" or (root in ("celery", "kombu") and _part(module) != "cli"):
                offenders[module].append(target)
        source = MODULES[module].read_text(encoding="utf-8")
        if 'import_module("worker' in source or "import_module('worker" in source:
            offenders[module].append("importlib: worker")
    assert not offenders, dict(offenders)


def test_importing_the_library_loads_no_celery() -> None:
    code = (
        "import sys, rotation, rotation.client.manager, rotation.run.engine, "
        "rotation.scheduler.dispatcher, rotation.ops.operations; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('celery', 'kombu', 'worker')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_dashboard_reads_through_ops_and_ledger_only() -> None:
    """It shows what the ledger holds and nothing else: no backend, rotator, engine or client."""
    allowed = {"dashboard", "ops", "ledger", *BASE}
    wrong = [
        f"{m} -> {t}"
        for m, ts in GRAPH.items()
        if _part(m) == "dashboard"
        for t in ts
        if t.startswith("rotation.") and _part(t) not in allowed
    ]
    assert not wrong, wrong


def test_importing_the_library_loads_no_web_server() -> None:
    code = (
        "import sys, rotation, rotation.cli, rotation.ops.overview; "
        "print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('starlette', 'uvicorn', 'jinja2') "
        "or m.startswith('rotation.dashboard')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_providers_import_no_rotator() -> None:
    wrong = [
        f"{m} -> {t}"
        for m, ts in GRAPH.items()
        if _part(m) == "providers"
        for t in ts
        if t.startswith("rotation.rotators")
    ]
    assert not wrong, wrong


# --- the error tree ---------------------------------------------------------------------------


def _raised_classes() -> set[type[BaseException]]:
    """Every exception class defined anywhere under rotation/."""
    import importlib

    found: set[type[BaseException]] = set()
    for module in MODULES:
        try:
            loaded = importlib.import_module(module)
        except ImportError as exc:  # an optional backend's client library is missing
            pytest.skip(f"{module}: {exc}")
        for _, obj in inspect.getmembers(loaded, inspect.isclass):
            if issubclass(obj, Exception) and obj.__module__.startswith("rotation"):
                found.add(obj)
    return found


def test_every_exception_lives_in_the_error_tree() -> None:
    elsewhere = {
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in _raised_classes()
        if cls.__module__ != "rotation.errors"
        and not cls.__qualname__.startswith("_")  # the CLI's one-line click usage error
    }
    assert not elsewhere, elsewhere
    drawn = errors.__doc__ or ""
    for name in errors.__all__:
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, Exception):
            assert f" {name} " in drawn, f"{name} is missing from the tree in rotation/errors.py"
            assert issubclass(cls, errors.KeyturnError)


def test_retryable_is_declared_once_per_class() -> None:
    assert errors.BackendUnavailable().retryable
    assert errors.VersionConflict().retryable
    assert not errors.ConfigurationError().retryable
    assert not errors.SecretNotFound("x").retryable
    assert errors.TargetRejected("refused").retryable is False
    assert errors.TargetRejected("down", retryable=True).retryable is True
    assert errors.TargetRejected("down", retryable=True).__class__.retryable is False


def test_a_role_denial_is_not_a_backend_error() -> None:
    denial = errors.RoleDenied("no", principal="bob", needed="read", action="secret.get")
    assert isinstance(denial, errors.PermissionDenied)
    assert not isinstance(denial, errors.BackendError)
    assert not denial.retryable
