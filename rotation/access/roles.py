"""Roles: who may list, read, write, delete, rotate secrets and read the audit trail.

Roles are ordered, ``VIEWER < ANALYST < OPERATOR < ADMIN < SUPER_ADMIN``; each holds the
permissions of the roles below it plus its own (``ROLE_PERMISSIONS``). The acting principal is
``acting_as(...)``'s inside that block, else this process's identity (``KEYTURN_ACTOR``, else the
login name). Its role is the one given to ``acting_as``, else its binding in ``KEYTURN_ROLES_FILE``
(``bindings: {alice: admin, ci-bot: operator, "*": viewer}``; ``"*"`` is everyone else).

Enforcement: with no bindings configured and no explicit role in play, every check passes (the
library behaves as it does without roles). Once bindings are configured, a principal with no
binding (and no ``"*"``) may do nothing. Roles guard application code and the CLI; they are not a
sandbox (code in the process holds the backend's credentials).
"""

from __future__ import annotations

import contextvars
import getpass
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from rotation.errors import ConfigurationError, RoleDenied

__all__ = [
    "GUARD",
    "ROLE_PERMISSIONS",
    "Bindings",
    "Permission",
    "Principal",
    "Role",
    "acting_as",
    "authorize",
    "configure",
    "current_principal",
    "default_actor",
    "ensure_configured",
    "reset",
    "role_of",
]


class Role(StrEnum):
    """A principal's role; compare with ``>=`` ("at least")."""

    #: list names and versions; never values
    VIEWER = "viewer"
    #: + read values
    ANALYST = "analyst"
    #: + rotate one secret
    OPERATOR = "operator"
    #: + write, delete, read the audit trail
    ADMIN = "admin"
    #: + rotate_all
    SUPER_ADMIN = "super_admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @classmethod
    def parse(cls, text: str) -> Role:
        """``"super-admin"``, ``"SUPER_ADMIN"`` or ``"super_admin"``."""
        key = str(text).strip().lower().replace("-", "_")
        try:
            return cls(key)
        except ValueError:
            choices = ", ".join(r.value for r in cls)
            raise ConfigurationError(f"Unknown role {text!r}; use one of {choices}.") from None

    def __ge__(self, other: object) -> bool:
        return self.rank >= _other_rank(other)

    def __gt__(self, other: object) -> bool:
        return self.rank > _other_rank(other)

    def __le__(self, other: object) -> bool:
        return self.rank <= _other_rank(other)

    def __lt__(self, other: object) -> bool:
        return self.rank < _other_rank(other)


_RANK = {role: rank for rank, role in enumerate(Role)}


def _other_rank(other: object) -> int:
    if not isinstance(other, Role):
        raise TypeError(f"cannot compare Role with {type(other).__name__}")
    return _RANK[other]


class Permission(StrEnum):
    """What an operation needs."""

    LIST = "list"  #: list(), versions()
    READ = "read"  #: get(), get_many()
    WRITE = "write"  #: set(), set_many()
    DELETE = "delete"  #: delete()
    ROTATE = "rotate"  #: rotate()
    ROTATE_ALL = "rotate_all"  #: rotate_all()
    AUDIT = "audit"  #: keyturn audit tail|verify


_OWN = {
    Role.VIEWER: {Permission.LIST},
    Role.ANALYST: {Permission.READ},
    Role.OPERATOR: {Permission.ROTATE},
    Role.ADMIN: {Permission.WRITE, Permission.DELETE, Permission.AUDIT},
    Role.SUPER_ADMIN: {Permission.ROTATE_ALL},
}
#: Each role's permissions: its own plus those of every role below it.
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    role: frozenset().union(*(_OWN[r] for r in Role if r <= role)) for role in Role
}


def minimum_role(permission: Permission) -> Role:
    """The lowest role that holds ``permission``."""
    return next(role for role in Role if permission in ROLE_PERMISSIONS[role])


@dataclass(frozen=True)
class Principal:
    """Who is acting; ``role`` given explicitly overrides the bindings."""

    name: str
    role: Role | None = None


@dataclass(frozen=True)
class Bindings:
    """Principal name -> role; ``"*"`` binds everyone not named."""

    roles: Mapping[str, Role]
    source: str = "code"

    def role_of(self, name: str) -> Role | None:
        return self.roles.get(name, self.roles.get("*"))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "code") -> Bindings:
        roles: dict[str, Role] = {}
        for name, role in data.items():
            if not isinstance(name, str) or not name.strip() or not isinstance(role, str):
                raise ConfigurationError(
                    f"{source}: each binding is 'principal: role' (two strings), "
                    f"not {name!r}: {role!r}."
                )
            try:
                roles[name.strip()] = Role.parse(role)
            except ConfigurationError as exc:
                raise ConfigurationError(f"{source}: binding {name!r}: {exc.message}") from None
        return cls(roles, source)

    @classmethod
    def load(cls, path: str | Path) -> Bindings:
        """Read a YAML file ``bindings: {alice: admin, "*": viewer}``."""
        import yaml  # only when roles are configured: ``import rotation`` stays light

        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigurationError(
                f"Cannot read the role bindings file {str(path)!r} (KEYTURN_ROLES_FILE): "
                f"{exc.strerror or exc}."
            ) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigurationError(f"{path}{where}: not valid YAML.") from None
        if not isinstance(data, dict) or not isinstance(data.get("bindings"), dict):
            raise ConfigurationError(
                f"{path}: expected a mapping 'bindings: {{principal: role, ...}}'."
            )
        return cls.from_mapping(data["bindings"], str(path))


@dataclass
class _Guard:
    """Process-wide role state; ``on`` is read on every SecretsManager call: a plain bool."""

    on: bool = False
    bindings: Bindings | None = None
    configured: bool = False
    _explicit_roles_seen: bool = field(default=False, repr=False)

    def update(self) -> None:
        self.on = self.bindings is not None or self._explicit_roles_seen


GUARD = _Guard()
_ACTING: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "keyturn_principal", default=None
)
_process_principal: Principal | None = None


def configure(bindings: Bindings | Mapping[str, str] | str | Path | None) -> None:
    """Set this process's role bindings (a ``Bindings``, a mapping, a YAML path) or None (off)."""
    if isinstance(bindings, str | Path):
        bindings = Bindings.load(bindings)
    elif bindings is not None and not isinstance(bindings, Bindings):
        bindings = Bindings.from_mapping(bindings)
    GUARD.bindings = bindings
    GUARD.configured = True
    GUARD.update()


def ensure_configured(environ: Mapping[str, str] | None = None) -> None:
    """Load ``KEYTURN_ROLES_FILE`` once per process (or from ``environ`` when it sets one)."""
    if GUARD.configured and (environ is None or not environ.get("KEYTURN_ROLES_FILE")):
        return
    env = os.environ if environ is None else environ
    path = (env.get("KEYTURN_ROLES_FILE") or "").strip()
    configure(path or None)


def reset() -> None:
    """Forget the bindings, the explicit-role switch and the process identity (tests)."""
    global _process_principal
    GUARD.bindings = None
    GUARD.configured = False
    GUARD._explicit_roles_seen = False
    GUARD.update()
    _process_principal = None


def default_actor(environ: Mapping[str, str] | None = None) -> str:
    """This process's identity: ``KEYTURN_ACTOR``, else the login name."""
    env = os.environ if environ is None else environ
    actor = (env.get("KEYTURN_ACTOR") or "").strip()
    if actor:
        return actor[:200]
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers running as a bare uid)
        return f"uid:{os.getuid()}"


def current_principal() -> Principal:
    """``acting_as``'s principal inside its block, else this process's identity (read once;
    ``reset()`` reads ``KEYTURN_ACTOR`` again)."""
    global _process_principal
    acting = _ACTING.get()
    if acting is not None:
        return acting
    if _process_principal is None:  # env and passwd lookups cost a microsecond: once only
        _process_principal = Principal(default_actor())
    return _process_principal


def role_of(principal: Principal) -> Role | None:
    """The explicit role, else the binding, else None."""
    if principal.role is not None:
        return principal.role
    bindings = GUARD.bindings
    return bindings.role_of(principal.name) if bindings is not None else None


@contextmanager
def acting_as(principal: Principal | str, role: Role | str | None = None) -> Iterator[Principal]:
    """Act as ``principal`` (a name, or a ``Principal``) in this block (and this context only)."""
    if isinstance(principal, str):
        principal = Principal(principal.strip()[:200] or "unknown")
    if role is not None:
        principal = Principal(principal.name, Role.parse(role))
    if principal.role is not None and not GUARD._explicit_roles_seen:
        ensure_configured()
        GUARD._explicit_roles_seen = True
        GUARD.update()
    token = _ACTING.set(principal)
    try:
        yield principal
    finally:
        _ACTING.reset(token)


def _allowed(role: Role | None, needed: Role | Permission) -> bool:
    if role is None:
        return GUARD.bindings is None  # nothing known about anyone: not enforced
    if isinstance(needed, Permission):
        return needed in ROLE_PERMISSIONS[role]
    return role >= needed


def _denied(
    principal: Principal,
    role: Role | None,
    needed: Role | Permission,
    action: str,
    secret: str | None,
) -> RoleDenied:
    what = f"{action} {secret!r}" if secret else action
    if isinstance(needed, Permission):
        need = f"the {needed.value!r} permission (role {minimum_role(needed).value} or above)"
    else:
        need = f"role {needed.value} or above"
    bindings = GUARD.bindings
    where = (
        "KEYTURN_ROLES_FILE" if bindings is None or bindings.source == "code" else bindings.source
    )
    return RoleDenied(
        f"Permission denied: {principal.name!r} (role: {role.value if role else 'none'}) may not "
        f"{what}: it needs {need}. Bind a role to {principal.name!r} in {where}.",
        principal=principal.name,
        needed=needed.value,
        action=action,
    )


def authorize(needed: Role | Permission, action: str, secret: str | None = None) -> Principal:
    """The acting principal if it holds ``needed``; else raise :class:`RoleDenied`.

    Does not audit: entry points call :func:`rotation.access.guard.authorize_audited`."""
    if not GUARD.configured:
        ensure_configured()
    principal = current_principal()
    role = role_of(principal)
    if not _allowed(role, needed):
        raise _denied(principal, role, needed, action, secret)
    return principal
