"""Signed manual requests: who sent a request to the workers, proven, never asserted.

An operator's request is an envelope ``{v, action, args, actor, issued_at, expires_at, nonce}``
signed with the operator's Ed25519 key over its canonical JSON (sorted keys, no spaces, UTF-8,
after a domain tag). The workers verify it against their keyring, a directory of
``<principal>.pub`` PEM files: the key of the claimed actor must have made the signature, the
request must not have expired by the ledger's clock, its lifetime may not exceed the workers'
``KEYTURN_REQUEST_TTL_SECONDS``, and its nonce is used once (``request_nonces``). Why an
envelope and not Celery's message signing: docs/audit-and-roles.md, "Trust boundaries".
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rotation.errors import ConfigurationError, RequestRefused
from rotation.ledger.models import RequestNonce

__all__ = [
    "FIELDS",
    "Keyring",
    "SignedRequest",
    "canonical",
    "claimed_actor",
    "consume_nonce",
    "generate_key_pair",
    "load_private_key",
    "sign",
    "verify",
]

#: The signed fields, in the order they are documented.
FIELDS = ("v", "action", "args", "actor", "issued_at", "expires_at", "nonce")
_DOMAIN = b"keyturn-request-v1\n"
_PRINCIPAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}$")
#: A request issued this far in the future (clock skew between ledger reads) is still accepted.
_SKEW = timedelta(seconds=30)


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_stamp(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def canonical(fields: Mapping[str, Any]) -> bytes:
    """The bytes signed: the domain tag, then the JSON of exactly :data:`FIELDS`."""
    body = {name: fields[name] for name in FIELDS}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return _DOMAIN + text.encode("utf-8")


@dataclass(frozen=True)
class SignedRequest:
    """A verified request: ``actor`` is proven by the signature."""

    action: str
    args: Mapping[str, Any]
    actor: str
    issued_at: datetime
    expires_at: datetime
    nonce: str


def sign(
    key: Ed25519PrivateKey,
    *,
    action: str,
    args: Mapping[str, Any],
    actor: str,
    now: datetime,
    ttl: timedelta,
) -> dict[str, Any]:
    """An envelope asking the workers to do ``action`` with ``args`` as ``actor`` until
    ``now + ttl`` (``now``: the ledger's clock)."""
    fields: dict[str, Any] = {
        "v": 1,
        "action": action,
        "args": dict(args),
        "actor": actor,
        "issued_at": _stamp(now),
        "expires_at": _stamp(now + ttl),
        "nonce": secrets.token_hex(16),
    }
    signature = key.sign(canonical(fields))
    return {**fields, "signature": base64.b64encode(signature).decode("ascii")}


def claimed_actor(envelope: object) -> str:
    """Who an envelope says it is from (not verified), for the refusal's audit record."""
    actor = envelope.get("actor") if isinstance(envelope, Mapping) else None
    return actor[:200] if isinstance(actor, str) and actor.strip() else "unknown"


class Keyring:
    """Operators' public keys by principal, from a directory of ``<principal>.pub`` PEM files."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey], source: str = "code") -> None:
        self.keys = dict(keys)
        self.source = source

    def key_of(self, principal: str) -> Ed25519PublicKey | None:
        return self.keys.get(principal)

    @classmethod
    def load(cls, directory: str | Path) -> Keyring:
        """Every ``*.pub`` file of ``directory``; a file that is no Ed25519 public key is an
        error naming it (a keyring is never silently partial)."""
        folder = Path(directory)
        if not folder.is_dir():
            raise ConfigurationError(
                f"KEYTURN_OPERATOR_KEYS={str(folder)!r} is not a directory of <principal>.pub "
                "files."
            )
        keys: dict[str, Ed25519PublicKey] = {}
        for path in sorted(folder.glob("*.pub")):
            if not _PRINCIPAL.match(path.stem):
                raise ConfigurationError(f"{path}: {path.stem!r} is not a principal name.")
            try:
                key = serialization.load_pem_public_key(path.read_bytes())
            except (OSError, ValueError) as exc:
                raise ConfigurationError(
                    f"{path}: not a PEM public key ({type(exc).__name__})."
                ) from None
            if not isinstance(key, Ed25519PublicKey):
                raise ConfigurationError(f"{path}: not an Ed25519 key ({type(key).__name__}).")
            keys[path.stem] = key
        return cls(keys, str(folder))


def _refuse(claimed: str, reason: str) -> RequestRefused:
    return RequestRefused(
        f"request refused: {reason} (claimed actor {claimed!r}); nothing was done",
        claimed=claimed,
        reason=reason,
    )


def verify(
    envelope: object,
    keyring: Keyring,
    *,
    action: str,
    args: Mapping[str, Any],
    now: datetime,
    max_ttl: timedelta,
) -> SignedRequest:
    """The request ``envelope`` carries if it holds; else raise :class:`RequestRefused` naming
    the claimed actor and the reason (never the arguments)."""
    claimed = claimed_actor(envelope)
    if not isinstance(envelope, Mapping) or set(envelope) != {*FIELDS, "signature"}:
        raise _refuse(claimed, f"not a signed request (its fields must be {', '.join(FIELDS)})")
    if envelope["v"] != 1 or not isinstance(envelope["args"], Mapping):
        raise _refuse(claimed, "unknown request format")
    actor = envelope["actor"]
    key = keyring.key_of(actor) if isinstance(actor, str) else None
    if key is None:
        where = keyring.source
        raise _refuse(claimed, f"no key for this principal in the workers' keyring ({where})")
    try:
        signature = base64.b64decode(str(envelope["signature"]), validate=True)
        key.verify(signature, canonical(envelope))
    except (InvalidSignature, binascii.Error, ValueError, TypeError):
        raise _refuse(
            claimed, "bad signature: not made by this principal's key, or the request was altered"
        ) from None
    issued, expires = _parse_stamp(envelope["issued_at"]), _parse_stamp(envelope["expires_at"])
    nonce = envelope["nonce"]
    if issued is None or expires is None or not isinstance(nonce, str) or not nonce:
        raise _refuse(claimed, "malformed times or nonce")
    if expires - issued > max_ttl + timedelta(seconds=1):
        raise _refuse(claimed, f"valid for longer than the workers allow ({max_ttl})")
    if now >= expires:
        raise _refuse(claimed, f"expired at {_stamp(expires)} (ledger time {_stamp(now)})")
    if issued > now + _SKEW:
        raise _refuse(claimed, f"issued in the future ({_stamp(issued)})")
    if envelope["action"] != action or dict(envelope["args"]) != dict(args):
        raise _refuse(claimed, f"signed for another action or arguments than this {action} task")
    return SignedRequest(action, dict(args), actor, issued, expires, nonce[:64])


def consume_nonce(session: Session, request: SignedRequest, now: datetime) -> None:
    """Record ``request``'s nonce in ``session``'s transaction (pruning expired ones); a nonce
    seen before is a replay: :class:`RequestRefused`. The caller's transaction is then broken:
    let it roll back."""
    session.execute(delete(RequestNonce).where(RequestNonce.expires_at < now))
    session.add(
        RequestNonce(
            nonce=request.nonce,
            principal=request.actor,
            action=request.action[:40],
            used_at=now,
            expires_at=request.expires_at,
        )
    )
    try:
        session.flush()
    except IntegrityError:
        raise _refuse(request.actor, "replayed: this signed request was used before") from None


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """The operator's key (``KEYTURN_OPERATOR_KEY``): a PEM file only its owner may read."""
    file = Path(path)
    try:
        mode = file.stat().st_mode
        data = file.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"Cannot read the operator key {str(file)!r} (KEYTURN_OPERATOR_KEY): "
            f"{exc.strerror or exc}."
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(
            f"The operator key {str(file)!r} may be read by others (mode {stat.S_IMODE(mode):o}); "
            f"`chmod 600 {file}`."
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"{file}: not an unencrypted PEM private key ({type(exc).__name__})."
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"{file}: not an Ed25519 key ({type(key).__name__}).")
    return key


def generate_key_pair(name: str, directory: str | Path) -> tuple[Path, Path]:
    """Write ``<name>.key`` (mode 0600) and ``<name>.pub`` in ``directory``; never overwrites."""
    if not _PRINCIPAL.match(name):
        raise ConfigurationError(
            f"{name!r} is not a principal name (letters, digits and . _ @ + -, at most 200)."
        )
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    private, public = folder / f"{name}.key", folder / f"{name}.pub"
    for path in (private, public):
        if path.exists():
            raise ConfigurationError(f"{path} exists; not overwriting a key.")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public
