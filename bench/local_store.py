"""The local store's cost, in two parts.

1. Cost of a write (stage + promote, as a rotation does) to the local store holding 10,000
   secrets against the same store holding 100.

   The store keeps one sealed file per secret, so the cost must not grow with the number
   stored. Both stores are timed alternately in the same run (the machine is shared and
   absolute times drift). Target: ratio <= 1.5. For reference, the single-file format of
   earlier versions re-sealed every secret on each write. Exit status 1 when the target is
   missed.

2. CPU per rotation's store calls: the provider calls one ``random`` rotation makes (recorded
   from a real run of the engine on the memory provider; see ``ROTATION_CALLS``), on the local
   store and on :class:`MemoryProvider`, ``ROTATIONS`` rotations each, in alternating blocks,
   timed with ``time.process_time()`` (CPU of this process: fsync waits do not count, the
   sealing, JSON, locking and system calls do). Printed: ms CPU per rotation on both and the
   difference, which is the local store's own share of ``bench/throughput.py``'s floor CPU;
   beside them, the system calls of the rotation's two durable writes alone (no sealing, no
   JSON), which the store's promises require. Informational (no target of its own: the target
   is throughput.py's <= 8 ms per rotation).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from _common import alternating, check

from rotation.errors import SecretNotFound
from rotation.providers.base import Provider
from rotation.providers.local import LocalProvider, generate_key
from rotation.providers.memory import MemoryProvider
from rotation.values import Stage

TARGET = 1.5
SMALL, LARGE = 100, 10_000
CALLS = 200
#: Rotations per side for the CPU figure, in blocks of ``BLOCK`` alternating between the sides.
ROTATIONS = 500
BLOCK = 25
#: Secrets the rotations go round (each reaches the store's version limit, as in use).
ROTATED = 50

#: The provider calls of one ``random`` rotation, in order, as the engine makes them
#: (rotation/run/steps.py and the rotator; no issuer hook, no consumers):
ROTATION_CALLS = """\
create   read(name)                      the current value
         read(name, stage=PENDING)       staged by an earlier try? (SecretNotFound)
         read(name, stage=PENDING)       RandomRotator.create asks again (SecretNotFound)
         stage_pending(name, value, token=token)
apply    read(name, stage=PENDING)       RandomRotator._new_value
test     read(name, stage=PENDING)       RandomRotator._new_value
promote  promote(name, token=token)
retire   read(name, stage=PREVIOUS)      RotationContext.previous()"""


def _store(root: Path, count: int) -> LocalProvider:
    provider = LocalProvider(root / str(count), key=generate_key())
    for i in range(count):
        provider.write(f"bench/secret_{i:05d}", {"username": "app", "password": f"pw-{i}"})
    return provider


def _rotation(provider: LocalProvider, count: int) -> Callable[[], None]:
    i = [0]

    def rotate() -> None:
        name = f"bench/secret_{i[0] % count:05d}"
        i[0] += 7
        token = uuid.uuid4().hex
        provider.stage_pending(name, {"username": "app", "password": token}, token=token)
        provider.promote(name, token=token)

    return rotate


def rotation_calls(provider: Provider, name: str) -> None:
    """The store calls of one ``random`` rotation of ``name`` (``ROTATION_CALLS``)."""
    current = provider.read(name)
    for _ in range(2):
        try:
            provider.read(name, stage=Stage.PENDING)
        except SecretNotFound:
            pass
    token = uuid.uuid4().hex
    provider.stage_pending(name, f"{current.version_id[:4]}-{token}", token=token)
    for _ in range(2):
        if provider.read(name, stage=Stage.PENDING).token != token:
            raise RuntimeError("the pending version is not this rotation's")
    provider.promote(name, token=token)
    if provider.read(name, stage=Stage.PREVIOUS).version_id != current.version_id:
        raise RuntimeError("the previous version is not the one replaced")


def _rotations(provider: Provider) -> Callable[[int], None]:
    names = [f"bench/rotated_{i:03d}" for i in range(ROTATED)]
    for name in names:
        provider.write(name, f"initial-{name}")
    done = [0]

    def run(count: int) -> None:
        for _ in range(count):
            rotation_calls(provider, names[done[0] % ROTATED])
            done[0] += 1

    return run


def _durable_writes(directory: Path, size: int) -> Callable[[int], None]:
    """The system calls of a rotation's two durable writes alone (temp file created, written,
    mtime set, fsynced, renamed into place, directory fsynced), with nothing sealed or parsed:
    what the store cannot do without, on the same filesystem."""
    directory.mkdir()
    path, blob = str(directory / "secret.enc"), secrets.token_bytes(size)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC

    def run(count: int) -> None:
        for _ in range(2 * count):
            tmp = f"{directory}/.secret-{secrets.token_hex(8)}"
            fd = os.open(tmp, flags, 0o600)
            try:
                os.write(fd, blob)
                os.utime(fd, ns=(time.time_ns(),) * 2)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    return run


def cpu_per_rotation(root: Path, profile: bool) -> None:
    local = LocalProvider(root / "cpu", key=generate_key())
    memory = MemoryProvider()
    run_local, run_memory = _rotations(local), _rotations(memory)
    run_local(ROTATED * 2)  # warm: every secret has versions, every file is cached
    run_memory(ROTATED * 2)
    size = max(p.stat().st_size for p in (root / "cpu" / "secrets").iterdir())
    sides = {
        "local store": run_local,
        "memory": run_memory,
        "durable writes alone": _durable_writes(root / "writes", size),
    }
    cpu = dict.fromkeys(sides, 0.0)
    labels = list(sides)
    for i in range(ROTATIONS // BLOCK):
        gc.collect()
        k = i % len(labels)
        for label in labels[k:] + labels[:k]:  # the order turns every block
            start = time.process_time()
            sides[label](BLOCK)
            cpu[label] += time.process_time() - start
    per = {label: total / ROTATIONS * 1e3 for label, total in cpu.items()}
    print(f"CPU per rotation's store calls ({ROTATIONS} random rotations each, alternating):")
    print("\n".join(f"    {line}" for line in ROTATION_CALLS.splitlines()))
    print(f"  local store:  {per['local store']:6.3f} ms CPU per rotation")
    print(f"  memory:       {per['memory']:6.3f} ms CPU per rotation")
    print(f"  difference:   {per['local store'] - per['memory']:6.3f} ms (the store's own)")
    print(
        f"  of which the system calls of 2 durable writes ({size} bytes; temp file, fsync, "
        f"rename, directory fsync): {per['durable writes alone']:6.3f} ms"
    )
    if profile:
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        run_local(ROTATIONS)
        profiler.disable()
        print(f"cProfile (CPU time) of {ROTATIONS} rotations' store calls, local store:")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="store_true", help="cProfile the local rotations")
    parser.add_argument("--cpu-only", action="store_true", help="skip the 100 vs 10,000 ratio")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cpu_per_rotation(root, args.profile)
        if args.cpu_only:
            return 0
        print(f"filling stores of {SMALL} and {LARGE} secrets ...", flush=True)
        small, large = _store(root, SMALL), _store(root, LARGE)
        timing = alternating(_rotation(small, SMALL), _rotation(large, LARGE), calls=CALLS)
    ratio = timing.ratio_of_medians
    print(f"stage+promote, {SMALL:>6} secrets stored: {timing.a_median * 1e3:7.2f} ms (median)")
    print(f"stage+promote, {LARGE:>6} secrets stored: {timing.b_median * 1e3:7.2f} ms (median)")
    print(f"ratio: {ratio:.2f}x (target <= {TARGET}x)")
    return (
        0 if check(ratio <= TARGET, "a write's cost does not grow with the secrets stored") else 1
    )


if __name__ == "__main__":
    sys.exit(main())
