"""The one way an entry point checks a permission: authorize, and audit a denial.

``authorize_audited`` is what the SecretsManager, the manual triggers, the CLI and
``@require_role`` call; nothing else records ``permission.denied``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, cast

from rotation.access import audit, roles
from rotation.access.audit import AuditSink
from rotation.access.roles import GUARD, Permission, Principal, Role
from rotation.errors import RoleDenied

__all__ = ["DEFAULT_SINK", "authorize_audited", "require_role"]

F = TypeVar("F", bound=Callable[..., Any])


class _DefaultSink:
    """Stands for the process's sink from the environment (``audit.default_sink()``)."""


#: Record denials in the process's sink (``KEYTURN_AUDIT``).
DEFAULT_SINK = _DefaultSink()


def authorize_audited(
    needed: Role | Permission,
    action: str,
    secret: str | None = None,
    *,
    sink: AuditSink | _DefaultSink | None = DEFAULT_SINK,
) -> Principal:
    """The acting principal if it holds ``needed``; else audit the denial and raise
    :class:`~rotation.errors.RoleDenied`."""
    try:
        return roles.authorize(needed, action, secret)
    except RoleDenied as exc:
        target = audit.default_sink() if isinstance(sink, _DefaultSink) else sink
        audit.record_denial(target, exc, action, secret)
        raise


def require_role(role: Role | str) -> Callable[[F], F]:
    """Call the decorated function only if the acting principal has at least ``role``.

    A denial raises :class:`~rotation.errors.RoleDenied` and is audited (``permission.denied``)."""
    needed = Role.parse(role) if isinstance(role, str) else role

    def check(action: str) -> None:
        if GUARD.on or not GUARD.configured:
            authorize_audited(needed, action)

    def decorate(fn: F) -> F:
        action = f"call {fn.__module__}.{fn.__qualname__}"
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                check(action)
                return await fn(*args, **kwargs)

            async_wrapper.required_role = needed  # type: ignore[attr-defined]
            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            check(action)
            return fn(*args, **kwargs)

        wrapper.required_role = needed  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return decorate
