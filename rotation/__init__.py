"""Keyturn's core: secrets behind one interface, rotated with zero downtime.

>>> from rotation import get_secrets_manager
>>> manager = get_secrets_manager()   # SECRETS_PROVIDER, SECRETS_CACHE_TTL from the environment
"""

from __future__ import annotations

from rotation.access.audit import AuditEvent
from rotation.access.guard import require_role
from rotation.access.roles import Permission, Principal, Role, acting_as, current_principal
from rotation.client.manager import (
    RotationReport,
    RotationResult,
    SecretsManager,
    get_secret,
    get_secrets_manager,
    reset_secrets_manager,
    set_secret,
)
from rotation.errors import (
    AuditWriteFailed,
    AuthenticationFailed,
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    InvalidSecretName,
    InvalidSecretValue,
    KeyturnError,
    PermissionDenied,
    RotationError,
    SecretNotFound,
    StoreCorrupted,
    UnknownProvider,
    UnsupportedOperation,
    VersionConflict,
)
from rotation.values import SecretVersion, Stage, VersionInfo

__all__ = [
    "AuditEvent",
    "AuditWriteFailed",
    "AuthenticationFailed",
    "BackendError",
    "BackendUnavailable",
    "ConfigurationError",
    "InvalidSecretName",
    "InvalidSecretValue",
    "KeyturnError",
    "Permission",
    "PermissionDenied",
    "Principal",
    "Role",
    "RotationError",
    "RotationReport",
    "RotationResult",
    "SecretNotFound",
    "SecretVersion",
    "SecretsManager",
    "Stage",
    "StoreCorrupted",
    "UnknownProvider",
    "UnsupportedOperation",
    "VersionConflict",
    "VersionInfo",
    "acting_as",
    "current_principal",
    "get_secret",
    "get_secrets_manager",
    "require_role",
    "reset_secrets_manager",
    "set_secret",
]
