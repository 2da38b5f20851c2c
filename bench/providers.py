"""What ``SecretsManager`` costs on top of each backend's own SDK, and its cache against AWS's.

1. Cache miss: ``SecretsManager.get(name, use_cache=False)`` against the raw SDK call the
   provider wraps, on the same server, secret and process, through the provider's own client
   object (same connection pool), timed in alternating blocks (AB BA AB ...):

   - vault: hvac ``secrets.kv.v2.read_secret_version(...)`` on an OpenBao dev server;
   - aws:   boto3 ``get_secret_value(SecretId=...)`` on a moto server;
   - azure: ``SecretClient.get_secret(name)`` on the tests' HTTPS Key Vault emulator.

   The secret holds a plain string. The bench also counts the HTTP requests one
   ``get(use_cache=False)`` sends, for a string and for a JSON object value.
   Target: ours / raw <= 1.10 for each backend.

2. Cache hit: ``SecretsManager.get(name)`` against ``aws-secretsmanager-caching``'s
   ``SecretCache.get_secret_string(name)``, both warm, on the same moto server.
   Target: ours at least 50x faster.

Every figure comes from this one run; the exit status is 1 when a target is missed.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import threading
import timeit
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import Paired, alternating, check, paired

from rotation import SecretsManager

MISS_TARGET = 1.10
HIT_TARGET = 50.0
STRING_VALUE = "sk-bench-0123456789abcdef0123456789abcdef"
JSON_VALUE = {"username": "bench", "password": "p-0123456789abcdef"}


class Counter:
    """Counts the HTTP requests a client sends (thread-safe)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def hit(self, *args: object, **kwargs: object) -> None:
        with self._lock:
            self.count += 1

    def __call__(self) -> int:
        return self.count


@dataclass(frozen=True)
class MissResult:
    backend: str
    raw: str
    timing: Paired
    trips_string: int
    trips_json: int
    #: ours on a JSON object value vs the same raw call, when that takes extra round trips
    json_timing: Paired | None


@dataclass
class Backend:
    """One provider under test, its raw read of the same secret, and a request counter."""

    name: str
    raw_label: str
    manager: SecretsManager
    raw_read: Callable[[], object]
    requests: Callable[[], int]  # HTTP requests sent so far
    calls: int  # timed calls of each side
    #: aws only: a new plain boto3 client on the same server (for the peer cache)
    new_client: Callable[[], Any] | None = None

    def requests_during(self, fn: Callable[[], object]) -> int:
        before = self.requests()
        fn()
        return self.requests() - before


# --- the three backends -------------------------------------------------------------------


@contextmanager
def vault_backend() -> Iterator[Backend]:
    from rotation.providers.vault import VaultProvider
    from rotation.providers.vault.auth import TokenAuth
    from tests.backends.openbao import start_openbao

    server = start_openbao()
    provider = VaultProvider(server.address, TokenAuth(server.root_token), path_prefix="bench")
    try:
        manager = SecretsManager(provider)
        manager.set("api_key", STRING_VALUE)
        manager.set("db_json", JSON_VALUE)
        counter = Counter()
        provider.client.session.hooks["response"].append(counter.hit)
        kv2 = provider.client.secrets.kv.v2

        def raw() -> object:
            return kv2.read_secret_version(
                path="bench/api_key", mount_point="secret", raise_on_deleted_version=True
            )

        yield Backend(
            "vault (OpenBao)",
            "hvac kv.v2.read_secret_version",
            manager,
            raw,
            counter,
            calls=2500,
        )
    finally:
        provider.close()
        server.stop()


@contextmanager
def aws_backend() -> Iterator[Backend]:
    from tests.backends.aws import make_aws_provider
    from tests.backends.motoserver import running_moto_server

    with running_moto_server() as server:
        provider = make_aws_provider(server, prefix="bench/")
        try:
            manager = SecretsManager(provider)
            manager.set("api_key", STRING_VALUE)
            manager.set("db_json", JSON_VALUE)
            counter = Counter()
            provider.client.meta.events.register("before-send", counter.hit)
            client = provider.client

            def raw() -> object:
                return client.get_secret_value(SecretId="bench/api_key")

            yield Backend(
                "aws (moto)",
                "boto3 get_secret_value",
                manager,
                raw,
                counter,
                calls=1000,
                new_client=server.client,
            )
        finally:
            provider.close()


@contextmanager
def azure_backend() -> Iterator[Backend]:
    from tests.backends.azure import KEYVAULT_TOKEN, make_azure_provider
    from tests.backends.keyvault import KeyVaultEmulator

    with tempfile.TemporaryDirectory(prefix="keyturn-bench-kv-") as tls_dir:
        emulator = KeyVaultEmulator(tokens={KEYVAULT_TOKEN}, tls_dir=Path(tls_dir))
        with emulator:
            provider = make_azure_provider(emulator, prefix="bench-")
            try:
                manager = SecretsManager(provider)
                manager.set("api_key", STRING_VALUE)
                manager.set("db_json", JSON_VALUE)
                client = provider._client  # the provider's own SecretClient
                azure_name = provider.names.to_azure("api_key")

                def raw() -> object:
                    return client.get_secret(azure_name)

                yield Backend(
                    "azure (emulator)",
                    "SecretClient.get_secret",
                    manager,
                    raw,
                    lambda: emulator.stats["requests"],  # counted by the server
                    calls=1500,
                )
            finally:
                provider.close()


# --- measurements ---------------------------------------------------------------------------


def measure_miss(backend: Backend) -> MissResult:
    manager = backend.manager

    def ours() -> object:
        return manager.get("api_key", use_cache=False)

    # warm up both paths (connections, token lookup, lazy imports) before counting and timing
    for _ in range(20):
        backend.raw_read()
        ours()
    trips_string = backend.requests_during(ours)
    trips_json = backend.requests_during(lambda: manager.get("db_json", use_cache=False))
    if backend.requests_during(backend.raw_read) != 1:
        raise RuntimeError(f"{backend.name}: the raw call is not one HTTP request")
    timing = alternating(backend.raw_read, ours, calls=backend.calls)
    json_timing = None
    if trips_json > 1:
        json_timing = alternating(
            backend.raw_read, lambda: manager.get("db_json", use_cache=False), calls=300
        )
    return MissResult(
        backend.name, backend.raw_label, timing, trips_string, trips_json, json_timing
    )


def measure_hit(manager: SecretsManager, client: Any) -> Paired:
    """Warm cache hits on the same secret: SecretCache is (a), ours is (b)."""
    from aws_secretsmanager_caching import SecretCache, SecretCacheConfig

    cache = SecretCache(config=SecretCacheConfig(), client=client)
    if (
        cache.get_secret_string("bench/api_key") != STRING_VALUE
        or manager.get("api_key") != STRING_VALUE
    ):
        raise RuntimeError("the two caches disagree on the value")
    get_string = cache.get_secret_string
    get = manager.get

    def theirs() -> object:
        return get_string("bench/api_key")

    def ours() -> object:
        return get("api_key")

    # blocks of ~20 ms of the slower one, order swapped every round
    number = max(1000, int(0.02 / (timeit.timeit(theirs, number=200) / 200)))
    return paired(theirs, ours, rounds=14, number=number)


# --- report ---------------------------------------------------------------------------------


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:9.1f} us"


def report_miss(result: MissResult) -> bool:
    t = result.timing
    print(f"{result.backend}:")
    ours = "SecretsManager.get(use_cache=False)"
    print(f"  raw  {result.raw:36s} median {_us(t.a_median)}   min {_us(t.a_min)}")
    print(f"  ours {ours:36s} median {_us(t.b_median)}   min {_us(t.b_min)}")
    print(
        f"  ours/raw {t.ratio_of_medians:.3f}x (median/median; +{_us(t.b_median - t.a_median)}), "
        f"min/min {t.ratio_of_mins:.3f}x, median of paired calls {t.ratio_of_pairs:.3f}x"
    )
    print(
        f"  HTTP requests per get(use_cache=False): string value {result.trips_string}, "
        f"JSON object value {result.trips_json}"
    )
    if result.json_timing is not None:
        j = result.json_timing
        print(
            f"  (JSON object value: ours median {_us(j.b_median)}, "
            f"{j.ratio_of_medians:.2f}x the raw string read)"
        )
    ok = check(t.ratio_of_medians <= MISS_TARGET, f"overhead {t.ratio_of_medians:.3f}x")
    return check(result.trips_string == 1, "one round trip for a plain current read") and ok


def main() -> int:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
    ok = True
    hit: Paired | None = None
    print("Cache miss: SecretsManager.get(name, use_cache=False) vs the raw SDK call")
    print(f"  (single calls alternated; target median ours/raw <= {MISS_TARGET:.2f})")
    backends: list[Callable[[], Any]] = [vault_backend, aws_backend, azure_backend]
    for make in backends:
        with make() as backend:
            result = measure_miss(backend)
            if backend.new_client is not None:
                client = backend.new_client()
                try:
                    hit = measure_hit(backend.manager, client)
                finally:
                    client.close()
        ok &= report_miss(result)

    assert hit is not None
    print()
    print("Cache hit: SecretsManager.get(name) vs aws-secretsmanager-caching (same moto server)")
    speedup = hit.a_min / hit.b_min
    print(f"  SecretCache.get_secret_string: min {hit.a_min * 1e9:9.1f} ns")
    print(f"  SecretsManager.get:            min {hit.b_min * 1e9:9.1f} ns")
    print(f"  ours is {speedup:.1f}x faster (target >= {HIT_TARGET:.0f}x)")
    ok &= check(speedup >= HIT_TARGET, f"cache hit {speedup:.1f}x faster")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
