"""Cost of a write (stage + promote, as a rotation does) to the local store holding 10,000
secrets against the same store holding 100.

The store keeps one sealed file per secret, so the cost must not grow with the number stored.
Both stores are timed alternately in the same run (the machine is shared and absolute times
drift). Target: ratio <= 1.5. For reference, the single-file format of earlier versions re-sealed
every secret on each write. Exit status 1 when the target is missed.
"""

from __future__ import annotations

import sys
import tempfile
import uuid
from pathlib import Path

from _common import alternating, check

from rotation.providers.local import LocalProvider, generate_key

TARGET = 1.5
SMALL, LARGE = 100, 10_000
CALLS = 200


def _store(root: Path, count: int) -> LocalProvider:
    provider = LocalProvider(root / str(count), key=generate_key())
    for i in range(count):
        provider.write(f"bench/secret_{i:05d}", {"username": "app", "password": f"pw-{i}"})
    return provider


def _rotation(provider: LocalProvider, count: int) -> object:
    i = [0]

    def rotate() -> None:
        name = f"bench/secret_{i[0] % count:05d}"
        i[0] += 7
        token = uuid.uuid4().hex
        provider.stage_pending(name, {"username": "app", "password": token}, token=token)
        provider.promote(name, token=token)

    return rotate


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
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
