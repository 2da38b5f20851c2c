"""Every error Keyturn raises, from one root.

Backends translate their own errors at their boundary (most specific first) and keep the
backend's exception as ``__cause__``. No message ever carries a secret value. ``retryable`` is
the one answer to "can trying again later help?": each class declares its default (marked
below) and a raise may override it (``TargetRejected(..., retryable=True)``); the engine retries
a failed step only when it is set, within the run's attempts.

    KeyturnError                    .retryable: trying again later may succeed
    ├── ConfigurationError          bad or missing settings (environment, files)
    │   ├── UnknownProvider         SECRETS_PROVIDER names no registered provider
    │   ├── PolicyFileError         a policy file is invalid (every problem, located)
    │   └── PolicyConflictError     two policies claim the same secret
    ├── InvalidSecretName           a name the backend would misread or refuse
    ├── InvalidSecretValue          a value that is neither a string nor a JSON object
    ├── SecretNotFound              no such secret (or no such version / stage)
    ├── VersionConflict             someone else wrote first (check-and-set lost)       [retryable]
    ├── UnsupportedOperation        the backend cannot do this (see ``capabilities``)
    ├── PermissionDenied            the backend refuses the credentials in use          [retryable]
    │   ├── SecretDisabled          Azure: the secret's current version is disabled
    │   ├── RoleDenied              Keyturn's role bindings refuse the acting principal
    │   └── RequestRefused          a manual request's proof of who sent it does not hold
    ├── BackendError                the backend answered, but not with success          [retryable]
    │   ├── AuthenticationFailed    credentials missing, expired or refused             [retryable]
    │   ├── BackendUnavailable      unreachable, timing out, or throttling past retries [retryable]
    │   │   └── Throttled           over the backend's request quota: wait, then go on  [retryable]
    │   └── StoreCorrupted          the local store cannot be decrypted or parsed
    ├── RotationError               a rotation step failed                              [retryable]
    │   ├── TargetRejected          the target (a database...) refused the change or the login
    │   ├── ConsumersFailed         a consumer could not move to the new value
    │   ├── StepBudgetExceeded      the step used up its time budget (under its lease)  [retryable]
    │   └── LeaseLost               another worker holds the run now: stop, commit nothing
    ├── NothingToRollBack           no rotation of the secret is between promotion and retirement
    ├── NothingToResolve            no run of the secret needs attention
    ├── AuditWriteFailed            the audit record could not be written: refused      [retryable]
    └── AnchorWriteFailed           the audit chain's head could not be anchored        [retryable]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "AnchorWriteFailed",
    "AuditWriteFailed",
    "AuthenticationFailed",
    "BackendError",
    "BackendUnavailable",
    "ConfigurationError",
    "ConsumersFailed",
    "InvalidSecretName",
    "InvalidSecretValue",
    "KeyturnError",
    "LeaseLost",
    "NothingToResolve",
    "NothingToRollBack",
    "PermissionDenied",
    "PolicyConflictError",
    "PolicyError",
    "PolicyFileError",
    "RequestRefused",
    "RoleDenied",
    "RotationError",
    "SecretDisabled",
    "SecretNotFound",
    "StepBudgetExceeded",
    "StoreCorrupted",
    "TargetRejected",
    "Throttled",
    "UnknownProvider",
    "UnsupportedOperation",
    "VersionConflict",
]


class KeyturnError(Exception):
    """Keyturn failed."""

    #: Whether trying the same thing again later may succeed (the class's default).
    retryable: ClassVar[bool] = False

    def __init__(self, message: str | None = None, *, retryable: bool | None = None) -> None:
        super().__init__(message or (self.__doc__ or type(self).__name__).strip())
        if retryable is not None:
            self.retryable = retryable  # type: ignore[misc]

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigurationError(KeyturnError):
    """Keyturn is not configured correctly; check the environment variables in the README."""


class UnknownProvider(ConfigurationError):
    """No such secrets provider."""


@dataclass(frozen=True)
class PolicyError:
    """One problem in a policy file, located as precisely as the file allows (not raised:
    :class:`PolicyFileError` carries a list of them)."""

    file: str
    line: int | None
    #: Dotted path of the offending field, e.g. ``policies[0].schedule.every`` ("" = the file).
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class PolicyFileError(ConfigurationError):
    """A policy file is invalid."""

    def __init__(self, errors: Sequence[PolicyError]) -> None:
        self.errors: list[PolicyError] = list(errors)
        text = str(self.errors[0]) if self.errors else "invalid policy file"
        if len(self.errors) > 1:
            text += f" (and {len(self.errors) - 1} more)"
        super().__init__(text)


class PolicyConflictError(ConfigurationError):
    """Two policies claim the same secret."""

    def __init__(self, conflicts: dict[str, tuple[str, ...]], resolved: Mapping[str, Any]) -> None:
        #: secret -> the names of the policies that claim it (equally specifically).
        self.conflicts = conflicts
        #: Every secret with exactly one policy (secret -> Policy): safe to act on.
        self.resolved = dict(resolved)
        shown = "; ".join(
            f"{secret!r} by {', '.join(repr(n) for n in names)}"
            for secret, names in sorted(conflicts.items())[:5]
        )
        more = f" (and {len(conflicts) - 5} more)" if len(conflicts) > 5 else ""
        super().__init__(
            f"Secrets claimed by more than one policy: {shown}{more}. "
            "Narrow the globs or list the secret by name in one policy."
        )


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

    retryable = True


class UnsupportedOperation(KeyturnError):
    """This backend does not support that operation."""


class PermissionDenied(KeyturnError):
    """Permission denied: the credentials in use may not do this."""

    # the backend's access policy may be fixed by an operator meanwhile
    retryable = True


class SecretDisabled(PermissionDenied):
    """The secret's current version is disabled."""


class RoleDenied(PermissionDenied):
    """Permission denied by Keyturn's role bindings."""

    retryable = False

    def __init__(self, message: str, *, principal: str, needed: str, action: str) -> None:
        super().__init__(message)
        #: Who asked, what they lacked (a role or permission name) and what they tried.
        self.principal = principal
        self.needed = needed
        self.action = action


class RequestRefused(PermissionDenied):
    """A manual request was refused: unsigned where a signature is needed, signed by a key that
    is not the claimed principal's, expired, or replayed."""

    retryable = False

    def __init__(self, message: str, *, claimed: str, reason: str) -> None:
        super().__init__(message)
        #: Who the request said it came from (not verified), and why it was refused.
        self.claimed = claimed
        self.reason = reason


class BackendError(KeyturnError):
    """The secrets backend refused the request."""

    retryable = True


class AuthenticationFailed(BackendError):
    """Authentication with the secrets backend failed: check its credentials."""


class BackendUnavailable(BackendError):
    """The secrets backend is unreachable or overloaded; retry later."""


class Throttled(BackendUnavailable):
    """The secrets backend is throttling requests (over its quota); wait and try again."""

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        #: Seconds the backend asked to wait (``Retry-After``), when it said.
        self.retry_after = retry_after


class StoreCorrupted(BackendError):
    """The local secret store cannot be read: wrong key or a corrupted file."""

    retryable = False


class RotationError(KeyturnError):
    """A rotation step failed."""

    # a target's or an issuer's failure is usually passing; attempts stay bounded either way
    retryable = True


class TargetRejected(RotationError):
    """The target refused the credential change or the login."""

    retryable = False

    def __init__(
        self, message: str, *, retryable: bool = False, sqlstate: str | None = None
    ) -> None:
        super().__init__(message, retryable=retryable)
        #: The database's SQLSTATE (or the target's own error code), when it sent one.
        self.sqlstate = sqlstate

    @property
    def login_refused(self) -> bool:
        return self.sqlstate is not None and self.sqlstate.startswith("28")


class ConsumersFailed(RotationError):
    """A consumer could not move to the new value; the promotion is rolled back."""

    retryable = False


class StepBudgetExceeded(RotationError):
    """The step used up its time budget; it is tried again later (within the run's attempts)."""

    retryable = True


class LeaseLost(RotationError):
    """This worker no longer holds the run's lease (it expired, another worker took the run
    over): the step stops before its next external action and commits nothing."""

    retryable = False


class NothingToResolve(KeyturnError):
    """No run of this secret needs attention."""


class NothingToRollBack(KeyturnError):
    """Nothing to roll back: no rotation of this secret is between promotion and retirement."""


class AuditWriteFailed(KeyturnError):
    """The audit record could not be written, so the operation was refused."""

    retryable = True


class AnchorWriteFailed(KeyturnError):
    """The audit chain's head could not be anchored (the anchor file or its key)."""

    retryable = True
