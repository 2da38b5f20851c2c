"""The dashboard's pages: secrets, runs, one run's timeline, what needs attention, the plan.

Read-only (GET only), server-rendered with Jinja2, charts as inline SVG, no JavaScript. It reads
the ledger through :class:`rotation.ops.overview.Overview` and never a backend, so it cannot
show a value: the ledger holds none.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from rotation.config import DEFAULT_DAILY_BUDGET
from rotation.dashboard.auth import AuthPolicy, RequireAuth, SecurityHeaders
from rotation.dashboard.charts import heatmap_svg, timeline_svg
from rotation.ops.overview import Overview, resolve_commands

__all__ = ["create_app"]

log = logging.getLogger("keyturn.dashboard")

HERE = Path(__file__).parent
#: The forecast's horizon: default and largest (a year of cells is still one screen).
PLAN_DAYS = 90
MAX_PLAN_DAYS = 366


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["ago"] = _ago
    env.filters["span"] = _span
    return Jinja2Templates(env=env)


def _when(at: datetime | None, empty: str = "-") -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S") if at is not None else empty


def _span(delta: timedelta | None, empty: str = "-") -> str:
    """``29d 4h``, ``3h 12m``, ``45s``, ``120 ms``; negative with a minus."""
    if delta is None:
        return empty
    seconds = delta.total_seconds()
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 1:
        return f"{sign}{seconds * 1000:.0f} ms"
    whole = int(seconds)
    parts = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
        if len(parts) == 2 or (parts and not count):
            break
    return sign + (" ".join(parts) or "0s")


def _ago(at: datetime | None, now: datetime) -> str:
    if at is None:
        return "-"
    delta = at - now
    return f"in {_span(delta)}" if delta.total_seconds() >= 0 else f"{_span(-delta)} ago"


def _safe_url(url: str) -> str:
    try:
        rendered: str = make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "the configured ledger"
    return rendered


def create_app(
    overview: Overview, auth: AuthPolicy, *, budget: int = DEFAULT_DAILY_BUDGET
) -> Starlette:
    """The dashboard over ``overview``, behind ``auth``."""
    templates = _templates()

    def page(request: Request, name: str, **context: Any) -> Response:
        context.setdefault("now", overview.now())
        context["user"] = request.scope.get("state", {}).get("user", "")
        return templates.TemplateResponse(request, name, context)

    def secrets(request: Request) -> Response:
        now = overview.now()
        rows = overview.secrets(now)
        return page(
            request,
            "secrets.html",
            now=now,
            rows=rows,
            has_expiry=any(r.expires_at is not None for r in rows),
            problems=sum(1 for r in rows if r.status.problem),
        )

    def runs(request: Request) -> Response:
        secret = request.query_params.get("secret") or None
        return page(request, "runs.html", runs=overview.recent_runs(100, secret), secret=secret)

    def run(request: Request) -> Response:
        now = overview.now()
        timeline = overview.run(int(request.path_params["run_id"]), now)
        if timeline is None:
            raise HTTPException(404, "no such run")
        end = timeline.run.finished_at or now
        return page(
            request,
            "run.html",
            now=now,
            timeline=timeline,
            chart=timeline_svg(timeline.steps, end),
            resolve=resolve_commands(timeline.run.secret),
        )

    def attention(request: Request) -> Response:
        now = overview.now()
        return page(request, "attention.html", now=now, items=overview.attention(now))

    def plan(request: Request) -> Response:
        try:
            days = int(request.query_params.get("days", PLAN_DAYS))
        except ValueError:
            raise HTTPException(400, "days must be a whole number") from None
        if not 1 <= days <= MAX_PLAN_DAYS:
            raise HTTPException(400, f"days must be between 1 and {MAX_PLAN_DAYS}")
        now = overview.now()
        result = overview.forecast(now, days, budget)
        return page(
            request,
            "plan.html",
            now=now,
            days=days,
            result=result,
            loads=result.days(),
            chart=heatmap_svg(result),
        )

    def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def ledger_down(request: Request, exc: Exception) -> Response:
        log.warning(
            "ledger unreachable: %s", type(exc).__name__, extra={"action": "dashboard.ledger_down"}
        )
        return HTMLResponse(
            "<!doctype html><title>Keyturn: ledger unreachable</title>"
            f"<p>Cannot read the ledger at {_escape(_safe_url(overview.ledger_url))} "
            f"({_escape(type(exc).__name__)}). Check KEYTURN_DATABASE_URL, or run "
            "<code>keyturn doctor</code>.</p>",
            status_code=503,
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return PlainTextResponse(f"{exc.detail}\n", status_code=exc.status_code)

    routes = [
        Route("/", secrets, methods=["GET"], name="secrets"),
        Route("/runs", runs, methods=["GET"], name="runs"),
        Route("/runs/{run_id:int}", run, methods=["GET"], name="run"),
        Route("/attention", attention, methods=["GET"], name="attention"),
        Route("/plan", plan, methods=["GET"], name="plan"),
        Route("/healthz", healthz, methods=["GET"], name="healthz"),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders), Middleware(RequireAuth, policy=auth)],
        exception_handlers={SQLAlchemyError: ledger_down, HTTPException: http_error},
    )


def _escape(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))
