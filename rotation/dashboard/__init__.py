"""The rotation dashboard (``keyturn dashboard``): a read-only web page over the ledger.

``app`` (the Starlette pages), ``auth`` (who may look), ``charts`` (server-side SVG) and the
Jinja2 ``templates``. It reads through :mod:`rotation.ops.overview` only and never imports a
backend, so a value cannot reach it. Loaded only by ``keyturn dashboard``: ``import rotation``
loads neither Starlette nor Jinja2.
"""

from __future__ import annotations

from rotation.dashboard.app import create_app
from rotation.dashboard.auth import AuthPolicy

__all__ = ["AuthPolicy", "create_app"]
