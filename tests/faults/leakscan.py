"""Helpers of the leak scan (tests/faults/test_no_leaks.py): capture every place a secret value
could end up, collect every value the secrets ever had, and look for the one in the other.

- :class:`RedisMonitor`: a ``MONITOR`` connection on a Redis for the test's duration, parsed into
  exact argument bytes (Redis escapes them; :func:`parse_monitor_line` undoes it);
- :func:`dump_keyspace`: every key of a Redis database and its value, whatever its type;
- :func:`dump_ledger`: ``pg_dump`` of a ledger database (else every table as text);
- :class:`StoreSampler`: every version value of a local store, sampled while the test runs (the
  store keeps 10 versions and drops discarded pending values, so the end state alone is not
  enough);
- :func:`json_logging_env`: a ``sitecustomize`` that makes every Python process of the test also
  write each log record with all its attributes (``extra`` fields, arguments, tracebacks) as a
  JSON line, as a structured-logging deployment would ship them;
- :func:`expand`: the texts a captured blob holds, Kombu message bodies (base64) decoded;
- :func:`scan`: needles (and their escaped spellings) in sources: the hits.

And a deliberately sloppy issuer hook (:class:`RefusingIssuer`) whose errors quote the value.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg import sql

from rotation.providers.local import LocalProvider

__all__ = [
    "MIN_NEEDLE",
    "RedisMonitor",
    "RefusingIssuer",
    "StoreSampler",
    "dump_keyspace",
    "dump_ledger",
    "expand",
    "json_logging_env",
    "needles_of",
    "parse_monitor_line",
    "scan",
    "start_celery",
    "variants",
]

#: Shorter values are not searched for: they would match by chance.
MIN_NEEDLE = 8
#: The JSON fields of a value that hold its secret part (postgres and random rotators).
SECRET_FIELDS = ("password", "api_key", "token", "secret", "client_secret")

# --- processes -------------------------------------------------------------------------------


def start_celery(
    cluster: Any, role: str, loglevel: str = "INFO", concurrency: int = 2
) -> subprocess.Popen[bytes]:
    """``celery -A worker worker|beat`` like ``Cluster.start``, at a chosen log level and
    concurrency; the process joins ``cluster.procs`` (stopped with the cluster)."""
    n = len(cluster.procs)
    args = [sys.executable, "-m", "celery", "-A", "worker", role, f"--loglevel={loglevel}"]
    if role == "worker":
        args += ["-Q", cluster.env["KEYTURN_QUEUE"], "-c", str(concurrency), "-n", f"w{n}@%h"]
    else:
        args += ["-s", str(cluster.workdir / f"beat-{n}")]
    log = open(cluster.workdir / f"{role}-{n}.log", "wb")
    proc = subprocess.Popen(
        args,
        env=cluster.env,
        cwd=str(Path(__file__).resolve().parents[2]),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    cluster.procs.append(proc)
    return proc


# --- Redis MONITOR ---------------------------------------------------------------------------

_ESCAPES = {"n": b"\n", "r": b"\r", "t": b"\t", "a": b"\a", "b": b"\b", '"': b'"', "\\": b"\\"}


def parse_monitor_line(line: str) -> list[bytes]:
    """``1700000000.1 [0 127.0.0.1:5] "SET" "k" "\\xe2\\x82"`` -> ``[b"SET", b"k", b"\\xe2\\x82"]``.

    Redis prints each argument quoted, escaping ``\\ " \\n \\r \\t \\a \\b`` and every other
    non-printable byte as ``\\xHH`` (sdscatrepr); this undoes exactly that."""
    start = line.find("] ")
    text = line[start + 2 :] if start >= 0 else line
    args: list[bytes] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] != '"':
            i += 1
            continue
        i += 1
        out = bytearray()
        while i < n and text[i] != '"':
            ch = text[i]
            if ch == "\\" and i + 1 < n:
                nxt = text[i + 1]
                if nxt == "x" and i + 3 < n:
                    try:
                        out.append(int(text[i + 2 : i + 4], 16))
                        i += 4
                        continue
                    except ValueError:
                        pass
                if nxt in _ESCAPES:
                    out += _ESCAPES[nxt]
                    i += 2
                    continue
            out += ch.encode("utf-8", "surrogateescape")
            i += 1
        args.append(bytes(out))
        i += 1
    return args


class RedisMonitor:
    """Records every command a Redis server executes, from ``start()`` to ``stop()``."""

    def __init__(self, url: str, deadline_seconds: float = 900) -> None:
        self.url = url
        self.deadline = time.monotonic() + deadline_seconds
        self.commands: list[list[bytes]] = []
        self.raw_bytes = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="redis-monitor", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> RedisMonitor:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"MONITOR did not start: {self.error!r}")
        return self

    def _run(self) -> None:
        client = redis.Redis.from_url(self.url)
        conn = client.connection_pool.make_connection()
        try:
            conn.connect()
            conn.send_command("MONITOR")
            if conn.read_response() not in (b"OK", "OK"):
                raise RuntimeError("MONITOR refused")
            self._ready.set()
            while not self._stop.is_set() and time.monotonic() < self.deadline:
                if not conn.can_read(timeout=0.2):
                    continue
                response = conn.read_response()
                line = (
                    response.decode("utf-8", "surrogateescape")
                    if isinstance(response, bytes)
                    else str(response)
                )
                self.raw_bytes += len(line)
                self.commands.append(parse_monitor_line(line))
        except BaseException as exc:  # reported by stop()
            self.error = exc
            self._ready.set()
        finally:
            conn.disconnect()
            client.close()

    def stop(self) -> list[list[bytes]]:
        self._stop.set()
        self._thread.join(10)
        if self.error is not None:
            raise RuntimeError(f"MONITOR failed: {self.error!r}")
        return self.commands


# --- Redis keyspace and the ledger -----------------------------------------------------------


def dump_keyspace(url: str) -> list[tuple[bytes, bytes, list[bytes]]]:
    """Every key of the database of ``url``: (key, type, [value parts]) for every type."""
    client = redis.Redis.from_url(url)
    out: list[tuple[bytes, bytes, list[bytes]]] = []
    try:
        for key in client.scan_iter(count=500):
            kind = client.type(key)
            parts: list[bytes] = []
            if kind == b"string":
                parts = [client.get(key) or b""]
            elif kind == b"hash":
                for k, v in client.hgetall(key).items():
                    parts += [k, v]
            elif kind == b"list":
                parts = list(client.lrange(key, 0, -1))
            elif kind == b"set":
                parts = list(client.smembers(key))
            elif kind == b"zset":
                parts = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
            elif kind == b"stream":
                for _, entry in client.xrange(key):
                    for k, v in entry.items():
                        parts += [k, v]
            out.append((key, kind, parts))
    finally:
        client.close()
    return out


def dump_ledger(url: str) -> str:
    """A full ``pg_dump`` of the ledger database; every table as text if pg_dump fails."""
    plain = url.replace("postgresql+psycopg://", "postgresql://", 1)
    try:
        done = subprocess.run(
            ["pg_dump", "--no-owner", "--inserts", plain],
            capture_output=True,
            timeout=120,
            check=True,
        )
        return done.stdout.decode("utf-8", "replace")
    except (OSError, subprocess.SubprocessError):
        pass
    parts: list[str] = []
    with psycopg.connect(plain) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        ).fetchall()
        for (table,) in tables:
            rows = conn.execute(
                sql.SQL("SELECT t::text FROM {} AS t").format(sql.Identifier(table))
            ).fetchall()
            parts.append(f"-- {table}\n" + "\n".join(r[0] for r in rows))
    return "\n".join(parts)


# --- the needles -----------------------------------------------------------------------------


def needles_of(value: object) -> set[str]:
    """The searchable strings of a secret value: the value, and a JSON value's secret fields."""
    found: set[str] = set()
    if isinstance(value, str):
        found.add(value)
    elif isinstance(value, Mapping):
        found.add(json.dumps(dict(value), sort_keys=True))
        for name, item in value.items():
            if isinstance(item, str) and (name in SECRET_FIELDS or "pass" in name.lower()):
                found.add(item)
    return {n for n in found if len(n) >= MIN_NEEDLE}


class StoreSampler:
    """Every value any version of any secret had in a local store, sampled every ``interval``."""

    def __init__(self, directory: str | Path, key: str, interval: float = 0.1) -> None:
        self.provider = LocalProvider(directory, key=key)
        self.interval = interval
        self.values: set[str] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-sampler", daemon=True)

    def start(self) -> StoreSampler:
        self.sample()
        self._thread.start()
        return self

    def sample(self) -> None:
        state = self.provider._load(None).state or {}
        for secret in state.get("secrets", {}).values():
            for version in secret.get("versions", []):
                raw = version.get("value")
                if not isinstance(raw, str):
                    continue
                self.values |= needles_of(json.loads(raw) if version.get("json") else raw)
        self.samples += 1

    def _run(self) -> None:
        deadline = time.monotonic() + 1800
        while not self._stop.wait(self.interval) and time.monotonic() < deadline:
            try:
                self.sample()
            except Exception:  # a store being replaced: the next sample sees it
                continue

    def stop(self) -> set[str]:
        self._stop.set()
        self._thread.join(10)
        self.sample()
        self.provider.close()
        return self.values


# --- structured logs of every process --------------------------------------------------------

SITECUSTOMIZE = '''\
"""Test-only: every log record of this process also goes, with all its attributes, to
$KEYTURN_TEST_JSONLOG_DIR/json-<pid>.jsonl (written by tests/faults/leakscan.py)."""
import json
import logging
import os

_DIR = os.environ.get("KEYTURN_TEST_JSONLOG_DIR")


class _JsonLines(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self._pid = None
        self._file = None

    def emit(self, record):
        try:
            if self._pid != os.getpid():  # forked pool children write their own file
                self._pid = os.getpid()
                self._file = open(os.path.join(_DIR, f"json-{self._pid}.jsonl"), "a")
            data = {k: v for k, v in record.__dict__.items() if k != "exc_info"}
            data["message"] = record.getMessage()
            if record.exc_info:
                data["exc_text"] = logging.Formatter().formatException(record.exc_info)
            self._file.write(json.dumps(data, default=repr) + "\\n")
            self._file.flush()
        except Exception:
            pass


if _DIR:
    _root = logging.getLogger()
    _root.addHandler(_JsonLines())
    _root._rudimentary_setup = True  # Celery still adds its own handler
'''


def json_logging_env(directory: Path) -> dict[str, str]:
    """Environment that makes Python processes also log every record as JSON in ``directory``."""
    site = directory / "site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    logs = directory / "jsonlogs"
    logs.mkdir(exist_ok=True)
    path = os.environ.get("PYTHONPATH", "")
    return {
        "PYTHONPATH": f"{site}{os.pathsep}{path}" if path else str(site),
        "KEYTURN_TEST_JSONLOG_DIR": str(logs),
    }


# --- scanning --------------------------------------------------------------------------------


def _json_texts(data: object, depth: int = 0) -> Iterator[str]:
    """Strings inside decoded JSON; Kombu bodies (base64) decoded and expanded in turn."""
    if depth > 20:
        return
    if isinstance(data, dict):
        props = data.get("properties")
        body = data.get("body")
        if (
            isinstance(body, str)
            and isinstance(props, dict)
            and props.get("body_encoding") == "base64"
        ):
            try:
                decoded = base64.b64decode(body, validate=True)
            except (binascii.Error, ValueError):
                decoded = b""
            if decoded:
                yield "<kombu-body>"
                yield from expand(decoded, depth + 1)
        for value in data.values():
            yield from _json_texts(value, depth + 1)
    elif isinstance(data, list):
        for item in data:
            yield from _json_texts(item, depth + 1)
    elif isinstance(data, str) and data[:1] in ("{", "["):
        yield from expand(data.encode("utf-8", "surrogateescape"), depth + 1)


def expand(blob: bytes | str, depth: int = 0) -> Iterator[str]:
    """The blob as text, and, when it is JSON, every message body it carries, decoded."""
    text = blob if isinstance(blob, str) else blob.decode("utf-8", "replace")
    yield text
    stripped = text.strip()
    if stripped[:1] in ("{", "[") and depth <= 20:
        try:
            data = json.loads(stripped)
        except ValueError:
            return
        yield from _json_texts(data, depth)


def variants(needle: str) -> set[str]:
    """How a value could be spelled in a log, a JSON document, a URL or an HTML page."""
    dumped = json.dumps(needle)[1:-1]
    return {
        needle,
        dumped,
        json.dumps(needle, ensure_ascii=False)[1:-1],
        dumped.replace("</", "<\\/"),
        html.escape(needle),
        urllib.parse.quote(needle, safe=""),
        urllib.parse.quote_plus(needle),
        repr(needle)[1:-1],
        needle.encode("unicode_escape").decode("ascii"),
    }


@dataclass
class Source:
    """One place scanned: how many bytes of text, and what was found in it."""

    name: str
    texts: list[str] = field(default_factory=list)
    _joined: str | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return sum(len(t) for t in self.texts)

    def add(self, blob: bytes | str) -> None:
        self.texts.extend(expand(blob))
        self._joined = None

    def add_all(self, blobs: Iterable[bytes | str]) -> None:
        for blob in blobs:
            self.add(blob)

    def contains(self, needle: str) -> bool:
        if self._joined is None:
            self._joined = "\x00".join(self.texts)
        return needle in self._joined

    @property
    def kombu_bodies(self) -> int:
        return sum(1 for t in self.texts if t == "<kombu-body>")


def scan(sources: Iterable[Source], needles: Iterable[str]) -> dict[str, list[str]]:
    """``{source: [needle ...]}`` for every needle (in any spelling) found in a source."""
    spelled = {n: variants(n) for n in needles if len(n) >= MIN_NEEDLE}
    hits: dict[str, list[str]] = {}
    for source in sources:
        for needle, forms in spelled.items():
            if any(source.contains(form) for form in forms):
                hits.setdefault(source.name, []).append(needle)
    return hits


def context_of(source: Source, needle: str, width: int = 120) -> str:
    """Where ``needle`` appears in ``source`` (for the failure message), value masked."""
    for text in source.texts:
        index = text.find(needle)
        if index >= 0:
            around = text[max(0, index - width) : index + len(needle) + width]
            return around.replace(needle, f"<VALUE {needle[:3]}...>")
    return "?"


# --- a sloppy issuer hook --------------------------------------------------------------------


class RefusingIssuer:
    """An issuer whose ``test`` always fails with an error that quotes the value (as careless
    hooks do); the rotator must not pass that text on. ``apply`` records the values it saw in
    ``$KEYTURN_TEST_NEEDLES`` (the test's own list, outside every scanned place)."""

    def apply(self, secret: str, value: Any) -> None:
        journal = os.environ.get("KEYTURN_TEST_NEEDLES")
        if journal:
            with open(journal, "a") as handle:
                handle.write(json.dumps(value) + "\n")

    def test(self, secret: str, value: Any) -> None:
        raise ValueError(f"issuer refused {secret}: the key {value!s} is not registered")

    def retire(self, secret: str, old: Any) -> None:
        raise ValueError(f"cannot retire {old!s}")

    def undo(self, secret: str) -> None:
        return None
