"""Cost of a cached ``SecretsManager.get()`` against a bare dict lookup plus ``time.monotonic()``.

Both are measured in the same run (min of several repeats) because absolute times drift on a
shared machine. Target: ratio <= 3.0. Exit status 1 when the target is missed.
"""

from __future__ import annotations

import sys
import time
import timeit

from rotation import SecretsManager
from rotation.providers.memory import MemoryProvider

TARGET = 3.0
NUMBER = 200_000
REPEAT = 7


def main() -> int:
    manager = SecretsManager(MemoryProvider(), cache_ttl=300)
    manager.set("api_key", "sk-bench")
    manager.get("api_key")
    table = {"api_key": ("sk-bench", time.monotonic() + 300)}
    monotonic = time.monotonic

    def baseline() -> object:
        entry = table.get("api_key")
        return entry if entry[1] > monotonic() else None  # type: ignore[index]

    get = manager.get
    base = min(timeit.repeat(baseline, number=NUMBER, repeat=REPEAT)) / NUMBER
    ours = min(timeit.repeat(lambda: get("api_key"), number=NUMBER, repeat=REPEAT)) / NUMBER
    # both sides pay one lambda/def call; the ratio compares what happens inside
    ratio = ours / base
    print(f"baseline dict lookup + time.monotonic(): {base * 1e9:8.1f} ns")
    print(f"SecretsManager.get() cache hit:          {ours * 1e9:8.1f} ns")
    print(f"ratio: {ratio:.2f}x (target <= {TARGET}x)")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
