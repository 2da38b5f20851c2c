"""Signed anchors of the audit chain's head, kept outside the ledger.

The hash chain (:mod:`rotation.access.audit`) names any edited, inserted or deleted record
except the newest: delete the last rows and what is left is a shorter chain, intact. An anchor
is the chain's head (``seq`` and ``hash``) at a moment, signed with an Ed25519 key the workers
hold, appended as one JSON line to a file (``KEYTURN_AUDIT_ANCHOR_FILE``) opened with
``O_APPEND``, and logged (logger ``keyturn.audit``, action ``audit.anchor``). Whoever can write
the ledger cannot write that file (another machine's disk, another credential) nor sign a line
(only the public key is needed to check one), so :func:`check` finds rows deleted after an
anchor: the chain ends before the anchored ``seq``, or its record there has another hash.

Workers anchor from the dispatcher tick (at most every ``KEYTURN_AUDIT_ANCHOR_SECONDS``) and
``keyturn audit anchor`` anchors at once.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from rotation.config import AnchorSettings
from rotation.errors import AnchorWriteFailed, ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from rotation.ledger.db import Ledger

__all__ = [
    "Anchor",
    "AnchorCheck",
    "AnchorFile",
    "anchor_now",
    "check",
    "maybe_anchor",
    "read_anchors",
]

log = logging.getLogger("keyturn.audit")

#: An anchor line is far shorter; a longer one is not read (a file that is not ours).
_MAX_LINE = 4096


@dataclass(frozen=True)
class Anchor:
    """The chain's head at ``at``, as signed by ``by`` (a worker id or ``cli@host``)."""

    seq: int
    hash: str
    at: datetime
    by: str
    signature: str = ""

    def signed_bytes(self) -> bytes:
        fields = {
            "v": 1,
            "seq": self.seq,
            "hash": self.hash,
            "at": self.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "by": self.by,
        }
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    def line(self) -> bytes:
        fields = json.loads(self.signed_bytes())
        fields["sig"] = self.signature
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode() + b"\n"

    def when(self) -> str:
        return f"{self.at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _private_key(settings: AnchorSettings) -> Ed25519PrivateKey:
    if settings.key_file is None:
        raise ConfigurationError(
            "KEYTURN_AUDIT_ANCHOR_FILE is set but KEYTURN_AUDIT_ANCHOR_KEY is not: name the "
            "Ed25519 private key (PEM) anchors are signed with."
        )
    try:
        key = serialization.load_pem_private_key(Path(settings.key_file).read_bytes(), None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"Cannot load KEYTURN_AUDIT_ANCHOR_KEY {settings.key_file!r} "
            f"({type(exc).__name__}): it must be an unencrypted Ed25519 private key in PEM."
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(
            f"KEYTURN_AUDIT_ANCHOR_KEY {settings.key_file!r} is not an Ed25519 private key."
        )
    return key


def _public_key(settings: AnchorSettings) -> Ed25519PublicKey:
    if settings.public_key_file is None:
        if settings.key_file is None:
            raise ConfigurationError(
                "KEYTURN_AUDIT_ANCHOR_FILE is set but neither KEYTURN_AUDIT_ANCHOR_PUBLIC_KEY "
                "nor KEYTURN_AUDIT_ANCHOR_KEY is: name the key anchors are checked with."
            )
        return _private_key(settings).public_key()
    try:
        key = serialization.load_pem_public_key(Path(settings.public_key_file).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"Cannot load KEYTURN_AUDIT_ANCHOR_PUBLIC_KEY {settings.public_key_file!r} "
            f"({type(exc).__name__}): it must be an Ed25519 public key in PEM."
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigurationError(
            f"KEYTURN_AUDIT_ANCHOR_PUBLIC_KEY {settings.public_key_file!r} is not an Ed25519 key."
        )
    return key


def anchor_now(ledger: Ledger, settings: AnchorSettings, by: str) -> Anchor:
    """Read the chain's head and append its signed anchor to the file (and the log)."""
    from rotation.access.audit import head

    if settings.file is None:
        raise ConfigurationError(
            "KEYTURN_AUDIT_ANCHOR_FILE is not set: there is nowhere to anchor the audit chain."
        )
    key = _private_key(settings)
    with ledger.sessions() as session:
        seq, digest = head(session)
    unsigned = Anchor(seq, digest, datetime.now(UTC), by[:200])
    signature = base64.b64encode(key.sign(unsigned.signed_bytes())).decode()
    anchor = Anchor(unsigned.seq, unsigned.hash, unsigned.at, unsigned.by, signature)
    try:
        fd = os.open(settings.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, anchor.line())  # one write: lines of two writers never interleave
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise AnchorWriteFailed(
            f"Could not append the audit anchor to {settings.file} ({type(exc).__name__}: "
            f"{exc.strerror or exc})."
        ) from None
    log.info(
        "audit anchor seq %s hash %s",
        anchor.seq,
        anchor.hash,
        extra={"action": "audit.anchor", "seq": anchor.seq, "hash": anchor.hash, "by": anchor.by},
    )
    return anchor


def maybe_anchor(ledger: Ledger, settings: AnchorSettings, by: str) -> Anchor | None:
    """Anchor if a file is configured and it was last written ``settings.every`` ago or more
    (its modification time: every process on the host shares it). Failures are logged, not
    raised: the tick that calls this has other work."""
    if settings.file is None:
        return None
    try:
        age = time.time() - os.stat(settings.file).st_mtime
    except FileNotFoundError:
        age = float("inf")
    except OSError as exc:
        log.error("audit anchor file unreadable: %s", exc, extra={"action": "audit.anchor"})
        return None
    if age < settings.every.total_seconds():
        return None
    try:
        return anchor_now(ledger, settings, by)
    except (AnchorWriteFailed, ConfigurationError) as exc:
        log.error("audit chain not anchored: %s", exc.message, extra={"action": "audit.anchor"})
        return None


@dataclass
class AnchorFile:
    """What the anchor file holds: the anchors whose signature verifies, and the lines that
    do not (forged, damaged): ``(line number, reason)``."""

    anchors: list[Anchor] = field(default_factory=list)
    bad_lines: list[tuple[int, str]] = field(default_factory=list)

    @property
    def latest(self) -> Anchor | None:
        return max(self.anchors, key=lambda a: (a.seq, a.at), default=None)


def _parse(raw: bytes) -> Anchor:
    fields = json.loads(raw)
    if not isinstance(fields, dict) or fields.get("v") != 1:
        raise ValueError("not a version 1 anchor")
    at = datetime.strptime(str(fields["at"]), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    seq, digest = fields["seq"], fields["hash"]
    if not isinstance(seq, int) or not isinstance(digest, str):
        raise ValueError("seq or hash of the wrong type")
    return Anchor(seq, digest, at, str(fields["by"]), str(fields["sig"]))


def read_anchors(settings: AnchorSettings) -> AnchorFile | None:
    """Every line of the anchor file, checked against the public key (None: no file yet)."""
    if settings.file is None:
        return None
    key = _public_key(settings)
    try:
        data = Path(settings.file).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigurationError(
            f"Cannot read KEYTURN_AUDIT_ANCHOR_FILE {settings.file!r} ({type(exc).__name__})."
        ) from None
    result = AnchorFile()
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        if len(raw) > _MAX_LINE:
            result.bad_lines.append((number, "longer than any anchor"))
            continue
        try:
            anchor = _parse(raw)
            key.verify(base64.b64decode(anchor.signature, validate=True), anchor.signed_bytes())
        except InvalidSignature:
            result.bad_lines.append((number, "its signature does not verify (forged or edited)"))
            continue
        except (ValueError, KeyError, TypeError):
            result.bad_lines.append((number, "not an anchor line (damaged)"))
            continue
        result.anchors.append(anchor)
    return result


@dataclass
class AnchorCheck:
    """The chain against its anchors: ``problems`` are lines to print, empty when it matches."""

    latest: Anchor | None = None
    anchors: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check(session: Session, found: AnchorFile, head_seq: int) -> AnchorCheck:
    """Compare the chain (its head at ``head_seq``) with every anchor that verifies: a chain
    ending before the latest anchored ``seq`` lost its newest records; a record whose hash is
    not the anchored one was rewritten (or deleted and appended again)."""
    from sqlalchemy import select

    from rotation.ledger.models import AuditRecord

    result = AnchorCheck(latest=found.latest, anchors=len(found.anchors))
    for number, reason in found.bad_lines:
        result.problems.append(f"anchor file line {number}: {reason}")
    latest = found.latest
    if latest is not None and head_seq < latest.seq:
        result.problems.append(
            f"{latest.seq - head_seq} newest record(s) deleted since the anchor at "
            f"{latest.when()} (anchored head seq {latest.seq}, the chain now ends at seq "
            f"{head_seq})"
        )
    wanted: dict[int, list[Anchor]] = {}
    for anchor in found.anchors:
        if 0 < anchor.seq <= head_seq:
            wanted.setdefault(anchor.seq, []).append(anchor)
    hashes: dict[int, str] = {}
    seqs: Sequence[int] = sorted(wanted)
    for start in range(0, len(seqs), 500):
        chunk = seqs[start : start + 500]
        rows = session.execute(
            select(AuditRecord.seq, AuditRecord.hash).where(AuditRecord.seq.in_(chunk))
        )
        hashes.update({seq: digest for seq, digest in rows})
    for seq in seqs:
        for anchor in wanted[seq]:
            if hashes.get(seq) != anchor.hash:
                result.problems.append(
                    f"record seq {seq} is not the one anchored at {anchor.when()}: its hash "
                    "differs (the newest records were deleted and others appended, or it was "
                    "rewritten)"
                )
                break
    return result
