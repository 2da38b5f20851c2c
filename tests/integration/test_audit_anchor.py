"""Anchors of the audit chain's head: deleting the newest records with SQL in a real Postgres
ledger is reported by ``keyturn audit verify``; a forged anchor is reported; the dispatcher
tick anchors at most every ``KEYTURN_AUDIT_ANCHOR_SECONDS``, in real worker and beat processes
too."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rotation.access import anchor, roles
from rotation.access import audit as audit_module
from rotation.cli import main
from rotation.config import AnchorSettings
from rotation.ledger.db import Ledger
from rotation.providers.memory import MemoryProvider
from tests.backends.cluster import wait_for
from tests.integration.test_audit import check, sql, write_events
from tests.integration.test_engine import Clock, make, write_policy


def write_key(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return key


@pytest.fixture
def anchor_file(ledger_url, tmp_path, monkeypatch) -> Path:
    for var in ("KEYTURN_ROLES_FILE", "KEYTURN_ACTOR", "KEYTURN_AUDIT"):
        monkeypatch.delenv(var, raising=False)
    roles.reset()
    key = write_key(tmp_path / "anchor.pem")
    (tmp_path / "anchor.pub.pem").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    path = tmp_path / "anchors.jsonl"
    monkeypatch.setenv("KEYTURN_DATABASE_URL", ledger_url)
    monkeypatch.setenv("KEYTURN_AUDIT_ANCHOR_FILE", str(path))
    monkeypatch.setenv("KEYTURN_AUDIT_ANCHOR_KEY", str(tmp_path / "anchor.pem"))
    yield path
    roles.reset()
    audit_module.reset_default_sink()


def cli(*args: str):
    return CliRunner().invoke(main, ["audit", *args])


def test_an_untouched_chain_matches_its_anchor(anchor_file, ledger: Ledger) -> None:
    write_events(ledger, 5)
    anchored = cli("anchor")
    assert anchored.exit_code == 0, anchored.output
    assert "anchored head seq 5" in anchored.output
    write_events(ledger, 2)  # the chain grows past the anchor: still fine
    result = cli("verify")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: 7 records, chain intact")
    assert "anchors: 1 match; latest at" in result.output and "(seq 5, by cli@" in result.output


def test_deleting_the_newest_records_is_reported(anchor_file, ledger, monkeypatch) -> None:
    write_events(ledger, 5)
    assert cli("anchor").exit_code == 0
    sql(ledger, "DELETE FROM audit_records WHERE seq >= 4")
    assert check(ledger).ok  # the chain alone cannot see it: what is left is intact
    # the verifier needs only the public key
    monkeypatch.delenv("KEYTURN_AUDIT_ANCHOR_KEY")
    monkeypatch.setenv(
        "KEYTURN_AUDIT_ANCHOR_PUBLIC_KEY", str(anchor_file.parent / "anchor.pub.pem")
    )
    result = cli("verify")
    assert result.exit_code == 1
    assert "TAMPERED 2 newest record(s) deleted since the anchor at" in result.output
    assert "anchored head seq 5, the chain now ends at seq 3" in result.output


def test_deleted_records_appended_again_are_reported(anchor_file, ledger) -> None:
    write_events(ledger, 5)
    assert cli("anchor").exit_code == 0
    sql(ledger, "DELETE FROM audit_records WHERE seq >= 4")
    # the chain's head row too (appends continue from it), as one who can delete rows can
    sql(
        ledger,
        "UPDATE audit_head SET (seq, hash, prev_hash) = "
        "(SELECT seq, hash, prev_hash FROM audit_records WHERE seq = 3)",
    )
    write_events(ledger, 3, actor="mallory")  # the chain is as long as before, and longer
    assert check(ledger).ok
    result = cli("verify")
    assert result.exit_code == 1
    assert "TAMPERED record seq 5 is not the one anchored at" in result.output


def test_a_forged_anchor_is_reported(anchor_file, ledger, tmp_path) -> None:
    write_events(ledger, 3)
    assert cli("anchor").exit_code == 0
    # a line claiming a longer chain, signed with another key, then the good line edited
    other = write_key(tmp_path / "other.pem")
    genuine = json.loads(anchor_file.read_text().splitlines()[0])
    claim = {k: v for k, v in genuine.items() if k != "sig"} | {"seq": 9}
    signed = json.dumps(claim, sort_keys=True, separators=(",", ":")).encode()
    forged = dict(claim, sig=base64.b64encode(other.sign(signed)).decode())
    edited = dict(genuine, seq=1)
    with anchor_file.open("a") as out:
        out.write(json.dumps(forged) + "\n" + json.dumps(edited) + "\n")
    result = cli("verify")
    assert result.exit_code == 1
    assert "TAMPERED anchor file line 2: its signature does not verify" in result.output
    assert "TAMPERED anchor file line 3: its signature does not verify" in result.output
    assert "deleted since" not in result.output  # the forged seq 9 is not believed


def test_verify_says_when_there_is_no_anchor(ledger_url, ledger, monkeypatch) -> None:
    monkeypatch.setenv("KEYTURN_DATABASE_URL", ledger_url)
    monkeypatch.delenv("KEYTURN_AUDIT_ANCHOR_FILE", raising=False)
    write_events(ledger, 2)
    result = cli("verify")
    assert result.exit_code == 0
    assert "deleted newest records cannot be detected" in result.output


def test_anchor_without_a_key_is_a_clear_error(anchor_file, ledger, monkeypatch) -> None:
    monkeypatch.delenv("KEYTURN_AUDIT_ANCHOR_KEY")
    result = cli("anchor")
    assert result.exit_code != 0
    assert "KEYTURN_AUDIT_ANCHOR_KEY is not" in result.output
    assert not anchor_file.exists()


def test_the_dispatcher_tick_anchors_at_most_every_n_seconds(
    anchor_file, ledger_url, ledger, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("KEYTURN_AUDIT_ANCHOR_SECONDS", "3600")
    schedules = write_policy(tmp_path / "schedules", "policies: []\n").parent
    _runtime, _engine, dispatcher = make(ledger_url, MemoryProvider(), Clock(), schedules)
    write_events(ledger, 2)
    dispatcher.tick()
    dispatcher.tick()
    lines = anchor_file.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["seq"] == 2
    past = time.time() - 3601
    os.utime(anchor_file, (past, past))  # an hour on
    write_events(ledger, 1)
    dispatcher.tick()
    found = anchor.read_anchors(AnchorSettings.from_env())
    assert found is not None and [a.seq for a in found.anchors] == [2, 3]


def test_real_workers_anchor_and_the_cli_reports_what_was_deleted_since(
    cluster, ledger, tmp_path
) -> None:
    write_events(ledger, 4)
    path = tmp_path / "worker-anchors.jsonl"
    write_key(tmp_path / "worker-anchor.pem")
    cluster.env.update(
        KEYTURN_AUDIT_ANCHOR_FILE=str(path),
        KEYTURN_AUDIT_ANCHOR_KEY=str(tmp_path / "worker-anchor.pem"),
        KEYTURN_AUDIT_ANCHOR_SECONDS="1",
    )
    cluster.start("worker")
    cluster.start("beat")

    def anchored() -> list[dict[str, object]]:
        text = path.read_text() if path.exists() else ""
        return [json.loads(line) for line in text.splitlines()]

    wait_for(lambda: any(a["seq"] == 4 for a in anchored()), 90, cluster, "a worker's anchor")
    cluster.stop()
    latest = max(int(str(a["seq"])) for a in anchored())
    # signed by the worker (its id: host:pid of a pool process), not by a CLI
    assert all(str(a["by"]).startswith(f"{socket.gethostname()}:") for a in anchored())
    sql(ledger, f"DELETE FROM audit_records WHERE seq >= {latest}")
    private = serialization.load_pem_private_key(
        (tmp_path / "worker-anchor.pem").read_bytes(), None
    )
    (tmp_path / "worker-anchor.pub.pem").write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    env = {
        key: value
        for key, value in cluster.env.items()
        if not key.startswith("KEYTURN_AUDIT_ANCHOR_KEY")
    }
    env["KEYTURN_AUDIT_ANCHOR_PUBLIC_KEY"] = str(tmp_path / "worker-anchor.pub.pem")
    keyturn = Path(sys.executable).parent / "keyturn"
    done = subprocess.run(
        [str(keyturn), "audit", "verify"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "TAMPERED 1 newest record(s) deleted since the anchor at" in done.stdout
    assert f"anchored head seq {latest}, the chain now ends at seq {latest - 1}" in done.stdout
