"""``keyturn dashboard``: serve the read-only rotation dashboard until interrupted."""

from __future__ import annotations

import socket

import click

from rotation.cli.common import OpsCommand, safe_url
from rotation.config import DashboardSettings, EngineSettings
from rotation.errors import ConfigurationError


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or a one-line error naming the address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(
            f"Cannot listen on {host}:{port} ({exc.strerror or exc}); "
            "pick another --port or --host."
        ) from None
    sock.listen(128)
    return sock


@click.command("dashboard", cls=OpsCommand)
@click.option("--port", default=8088, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; 0.0.0.0 to serve other hosts (authentication is still required).",
)
@click.option(
    "--auth-file",
    type=click.Path(dir_okay=False),
    help="File of user:password lines, mode 600 (or KEYTURN_DASHBOARD_AUTH_FILE).",
)
@click.option(
    "--proxy-header",
    metavar="NAME",
    help="Trust this header (set by an authenticating reverse proxy) for the user's name, from "
    "KEYTURN_DASHBOARD_TRUSTED_PROXIES only (default 127.0.0.1, ::1).",
)
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    help="Serve without authentication, on a loopback address only (a quick local look).",
)
def dashboard_command(
    port: int, host: str, auth_file: str | None, proxy_header: str | None, insecure_no_auth: bool
) -> None:
    """Serve the rotation dashboard (read-only) over the ledger (KEYTURN_DATABASE_URL).

    Secrets with their flags, each run's step timeline, what needs attention and the command
    that resolves it, and the forecast of `keyturn plan` as a calendar. It never shows a value.
    Authentication is required: KEYTURN_DASHBOARD_BASIC_AUTH=user:password[,user2:pw2],
    --auth-file, or --proxy-header behind a proxy that authenticates.

    \b
    Examples:
      KEYTURN_DASHBOARD_BASIC_AUTH=ops:$(openssl rand -hex 12) keyturn dashboard --port 8088
      keyturn dashboard --proxy-header X-Forwarded-User      # behind oauth2-proxy on this host
      keyturn dashboard --insecure-no-auth                     # 127.0.0.1 only
    """
    import uvicorn

    from rotation.dashboard import AuthPolicy, create_app
    from rotation.ops.overview import Overview

    auth = AuthPolicy.from_settings(
        DashboardSettings.from_env(),
        host=host,
        insecure=insecure_no_auth,
        auth_file=auth_file,
        proxy_header=proxy_header,
    )
    budget = EngineSettings.from_env().daily_budget
    sock = bind(host, port)
    overview = Overview.open()
    try:
        app = create_app(overview, auth, budget=budget)
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        bound = sock.getsockname()[1]
        click.echo(
            f"serving the dashboard of the ledger at {safe_url(overview.ledger_url)} on "
            f"http://{host}:{bound}/ ({auth.describe()})",
            err=True,
        )
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        overview.close()
