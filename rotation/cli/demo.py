"""``keyturn demo``: a short tour of the library on the local encrypted store."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from rotation.client.manager import get_secrets_manager


@click.command("demo")
def demo_command() -> None:
    """Set a secret, rotate it, and show its versions (values are never printed)."""
    console = Console()
    manager = get_secrets_manager()
    console.print(f"provider: [bold]{manager.provider.name}[/]")
    manager.set("demo/api_key", "initial-value")
    manager.set("demo/db_password", {"username": "app", "password": "initial", "host": "localhost"})
    console.print("stored demo/api_key and demo/db_password")
    for _ in range(2):
        manager.rotate("demo/api_key")
    manager.rotate("demo/db_password")
    report = manager.rotate_all(pattern="demo/*")
    console.print(f"rotate_all(pattern='demo/*'): rotated {report.rotated}, failed {report.failed}")
    for name in manager.list(prefix="demo/"):
        table = Table(title=name)
        table.add_column("version")
        table.add_column("created")
        table.add_column("stages")
        for info in manager.versions(name):
            table.add_row(
                info.version_id,
                info.created.isoformat(timespec="seconds") if info.created else "-",
                ", ".join(sorted(s.value for s in info.stages)) or "-",
            )
        console.print(table)
