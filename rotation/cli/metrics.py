"""``keyturn metrics``: serve the ledger's Prometheus metrics until interrupted."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from wsgiref.simple_server import WSGIServer

import click
from prometheus_client import CollectorRegistry, start_http_server

from rotation.errors import ConfigurationError
from rotation.ledger.db import Ledger
from rotation.ops.metrics import LedgerCollector


def serve(collector: LedgerCollector, host: str, port: int) -> WSGIServer:
    """Start serving ``collector`` on ``host:port`` in a daemon thread; returns the server."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigurationError(
            f"Cannot listen on {host}:{port} ({exc.strerror or exc}); "
            "pick another --port or --host."
        ) from None
    return server


@click.command("metrics")
@click.option("--port", default=9464, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; 0.0.0.0 to let a Prometheus on another host scrape it.",
)
def metrics_command(port: int, host: str) -> None:
    """Serve Prometheus metrics computed from the ledger (KEYTURN_DATABASE_URL) at /metrics."""
    ledger = Ledger()
    try:
        server = serve(LedgerCollector(ledger), host, port)
    except BaseException:
        ledger.dispose()
        raise
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    click.echo(
        f"serving metrics of the ledger at {ledger.url.split('@')[-1]} on "
        f"http://{host}:{server.server_port}/metrics",
        err=True,
    )
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.shutdown()
        server.server_close()
        ledger.dispose()
