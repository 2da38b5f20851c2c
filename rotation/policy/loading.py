"""Loading policies: files and directories, every error located, and each secret's policy."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ValidationError

from rotation.errors import ConfigurationError, PolicyConflictError, PolicyError, PolicyFileError
from rotation.generator import GeneratorPolicy
from rotation.policy.files import (
    Loc,
    YamlDocument,
    parse_yaml,
    read_yaml,
    validation_errors,
)
from rotation.policy.model import Policy
from rotation.policy.restart import NoRestart
from rotation.policy.schedule_spec import ScheduleSpec, WindowSpec
from rotation.rotators.registry import ROTATORS, target_schema

__all__ = [
    "PolicySet",
    "default_schedules_dir",
    "load_policies",
    "load_policy_file",
    "load_policy_text",
    "policy_files",
    "resolve_secret_policies",
]

_MODELS_BY_FIELD: dict[str, type[BaseModel]] = {
    "schedule": ScheduleSpec,
    "window": WindowSpec,
    "generator": GeneratorPolicy,
}


def _fields_at(doc: YamlDocument, policy_loc: Loc) -> Callable[[Loc], Sequence[str]]:
    """Field names of the model at a path inside one policy, for "did you mean"."""

    def known(loc: Loc) -> Sequence[str]:
        if not loc:
            return [f for f in Policy.model_fields]
        model: type[BaseModel] | None = _MODELS_BY_FIELD.get(str(loc[0]))
        if loc[0] == "target":
            data = _get(doc.data, policy_loc)
            kind = data.get("kind") if isinstance(data, dict) else None
            model = target_schema(kind) if isinstance(kind, str) and kind in ROTATORS else None
        elif loc[0] == "restart":
            model = NoRestart
        return list(model.model_fields) if model is not None and len(loc) == 1 else []

    return known


def _get(data: object, loc: Loc) -> object:
    for part in loc:
        if isinstance(data, dict) and isinstance(part, str):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return None
    return data


def _policies_in(doc: YamlDocument) -> list[tuple[Loc, Policy]]:
    """Validate every policy of ``doc``; raise PolicyFileError with all the errors found."""
    data = doc.data
    if isinstance(data, dict) and "policies" in data:
        extra = [k for k in data if k != "policies"]
        if extra:
            raise PolicyFileError(
                [doc.error((k,), "unknown top-level key next to 'policies'") for k in extra]
            )
        items = data["policies"]
        if not isinstance(items, list) or not items:
            raise PolicyFileError(
                [doc.error(("policies",), "expected a non-empty list of policies")]
            )
        candidates: list[tuple[Loc, object]] = [(("policies", i), p) for i, p in enumerate(items)]
    elif isinstance(data, dict):
        candidates = [((), data)]
    else:
        raise PolicyFileError(
            [doc.error((), "expected a policy mapping or 'policies: [...]' at the top level")]
        )
    errors: list[PolicyError] = []
    result: list[tuple[Loc, Policy]] = []
    for loc, item in candidates:
        if not isinstance(item, dict):
            errors.append(doc.error(loc, "expected a policy mapping (name, secrets, kind, ...)"))
            continue
        try:
            policy = Policy.model_validate(item)
        except ValidationError as exc:
            errors.extend(validation_errors(exc, doc, loc, _fields_at(doc, loc)))
            continue
        policy._source = f"{doc.name}:{doc.line_of(loc)}"
        result.append((loc, policy))
    if errors:
        raise PolicyFileError(sorted(errors, key=lambda e: e.line or 0))
    return result


def _check_unique(
    doc: YamlDocument, found: list[tuple[Loc, Policy]], names: dict[str, str], exact: dict[str, str]
) -> list[PolicyError]:
    """Policy names unique, and no exact secret name listed by two policies."""
    errors: list[PolicyError] = []
    for loc, policy in found:
        if policy.name in names:
            errors.append(
                doc.error(
                    (*loc, "name"),
                    f"policy {policy.name!r} is already defined at {names[policy.name]}",
                )
            )
        names.setdefault(policy.name, f"{doc.name}:{doc.line_of((*loc, 'name'))}")
        for pattern in policy.patterns:
            if pattern in exact and exact[pattern] != policy.name:
                errors.append(
                    doc.error(
                        (*loc, "secrets" if "secrets" in _keys(doc, loc) else "secret"),
                        f"{pattern!r} is already claimed by policy {exact[pattern]!r}",
                    )
                )
            exact.setdefault(pattern, policy.name)
    return errors


def _keys(doc: YamlDocument, loc: Loc) -> Sequence[str]:
    data = _get(doc.data, loc)
    return list(data) if isinstance(data, dict) else []


def _load_doc(doc: YamlDocument, names: dict[str, str], exact: dict[str, str]) -> list[Policy]:
    found = _policies_in(doc)
    errors = _check_unique(doc, found, names, exact)
    if errors:
        raise PolicyFileError(errors)
    return [policy for _, policy in found]


def load_policy_text(text: str, name: str = "<string>") -> list[Policy]:
    """The policies in one YAML document; raises :class:`PolicyFileError` with every error."""
    return _load_doc(parse_yaml(text, name), {}, {})


def load_policy_file(path: str | os.PathLike[str]) -> list[Policy]:
    """The policies in one file; raises :class:`PolicyFileError` with every error."""
    return _load_doc(read_yaml(Path(path)), {}, {})


def default_schedules_dir() -> Path:
    """``$KEYTURN_SCHEDULES``, else ``./schedules``."""
    return Path(os.environ.get("KEYTURN_SCHEDULES") or "schedules")


@dataclass
class PolicySet:
    """Every valid policy found, and every error; a file with an error adds no policy."""

    policies: list[Policy] = field(default_factory=list)
    errors: list[PolicyError] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def get(self, name: str) -> Policy | None:
        return next((p for p in self.policies if p.name == name), None)


def policy_files(directory_or_file: Path) -> list[Path]:
    """``*.yaml`` and ``*.yml`` in a directory (not recursive, hidden files skipped), by name."""
    if directory_or_file.is_dir():
        return sorted(
            p
            for p in directory_or_file.iterdir()
            if p.suffix in (".yaml", ".yml") and not p.name.startswith(".") and p.is_file()
        )
    return [directory_or_file]


def load_policies(directory_or_file: str | os.PathLike[str] | None = None) -> PolicySet:
    """Load a file or every policy file of a directory (default :func:`default_schedules_dir`).

    A name defined in two files is an error of the later file (by file name), which is then
    refused as a whole, like any file with an error.
    """
    root = Path(directory_or_file) if directory_or_file is not None else default_schedules_dir()
    if not root.exists():
        raise ConfigurationError(
            f"Policy path not found: {str(root)!r}. Pass a file or directory, "
            "or set KEYTURN_SCHEDULES."
        )
    result = PolicySet(files=policy_files(root))
    names: dict[str, str] = {}
    exact: dict[str, str] = {}
    for path in result.files:
        # Claims of a refused file must not block later files: stage them, keep on success.
        staged_names, staged_exact = dict(names), dict(exact)
        try:
            result.policies.extend(_load_doc(read_yaml(path), staged_names, staged_exact))
        except PolicyFileError as exc:
            result.errors.extend(exc.errors)
            continue
        names, exact = staged_names, staged_exact
    return result


def resolve_secret_policies(
    policies: Iterable[Policy], secret_names: Iterable[str]
) -> dict[str, Policy]:
    """Each secret's policy. A policy naming the secret exactly beats one matching it by glob.

    Two policies claiming a secret equally (two exact names or two globs) raise
    :class:`PolicyConflictError`, whose ``.resolved`` still holds every unambiguous secret.
    """
    policies = list(policies)
    resolved: dict[str, Policy] = {}
    conflicts: dict[str, tuple[str, ...]] = {}
    for secret in secret_names:
        exact = [p for p in policies if secret in p.patterns]
        claims = exact or [p for p in policies if p.matches(secret)]
        if len(claims) == 1:
            resolved[secret] = claims[0]
        elif claims:
            conflicts[secret] = tuple(p.name for p in claims)
    if conflicts:
        raise PolicyConflictError(conflicts, resolved)
    return resolved
