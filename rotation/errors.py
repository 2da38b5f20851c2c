"""Every error Keyturn raises, from one root.

Backends translate their own errors at their boundary (most specific first) and keep the
backend's exception as ``__cause__``. No message ever carries a secret value.

    KeyturnError
    ├── ConfigurationError          bad or missing settings (environment, files)
    │   └── UnknownProvider         SECRETS_PROVIDER names no registered provider
    ├── InvalidSecretName           a name the backend would misread or refuse
    ├── InvalidSecretValue          a value that is neither a string nor a JSON object
    ├── SecretNotFound              no such secret (or no such version / stage)
    ├── VersionConflict             someone else wrote first (check-and-set lost)
    ├── UnsupportedOperation        the backend cannot do this (see ``capabilities``)
    ├── BackendError                the backend answered, but not with success
    │   ├── AuthenticationFailed    credentials missing, expired or refused
    │   ├── PermissionDenied        authenticated, but not allowed
    │   ├── BackendUnavailable      unreachable, timing out, or throttling past retries
    │   └── StoreCorrupted          the local store cannot be decrypted or parsed
    ├── RotationError               a rotation step failed
    └── AuditWriteFailed            the audit record could not be written: operation refused
"""

from __future__ import annotations

__all__ = [
    "AuditWriteFailed",
    "AuthenticationFailed",
    "BackendError",
    "BackendUnavailable",
    "ConfigurationError",
    "InvalidSecretName",
    "InvalidSecretValue",
    "KeyturnError",
    "PermissionDenied",
    "RotationError",
    "SecretNotFound",
    "StoreCorrupted",
    "UnknownProvider",
    "UnsupportedOperation",
    "VersionConflict",
]


class KeyturnError(Exception):
    """Keyturn failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or type(self).__name__).strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigurationError(KeyturnError):
    """Keyturn is not configured correctly; check the environment variables in the README."""


class UnknownProvider(ConfigurationError):
    """No such secrets provider."""


class InvalidSecretName(KeyturnError):
    """Invalid secret name."""


class InvalidSecretValue(KeyturnError):
    """A secret value must be a string or a JSON object."""


class SecretNotFound(KeyturnError):
    """Secret not found: it was never created, was deleted, or the name is misspelled."""

    def __init__(self, name: str, detail: str | None = None) -> None:
        self.name = name
        text = f"Secret not found: {name!r}"
        if detail:
            text += f" ({detail})"
        text += (
            ". It was never created, was deleted, or the name is misspelled: "
            "list the secrets with `keyturn secrets list` (or manager.list()) and create it "
            "with `keyturn secrets set NAME` (or manager.set(name, value))."
        )
        super().__init__(text)


class VersionConflict(KeyturnError):
    """Another writer changed this secret first; read it again and retry."""


class UnsupportedOperation(KeyturnError):
    """This backend does not support that operation."""


class BackendError(KeyturnError):
    """The secrets backend refused the request."""


class AuthenticationFailed(BackendError):
    """Authentication with the secrets backend failed: check its credentials."""


class PermissionDenied(BackendError):
    """Permission denied: the credentials in use may not do this."""


class BackendUnavailable(BackendError):
    """The secrets backend is unreachable or overloaded; retry later."""


class StoreCorrupted(BackendError):
    """The local secret store cannot be read: wrong key or a corrupted file."""


class RotationError(KeyturnError):
    """A rotation step failed."""


class AuditWriteFailed(KeyturnError):
    """The audit record could not be written, so the operation was refused."""
