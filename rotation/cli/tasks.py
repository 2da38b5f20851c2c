"""Sending tasks to the workers by name, through a Celery app built from the settings.

The CLI is a shell like ``worker/``: it may use Celery to send messages, never import ``worker``
(which would load the workers' task code and settings into an operator's process). Manual
actions go as signed requests (``rotation/access/requests.py``): the operator's key
(``KEYTURN_OPERATOR_KEY``, ``<principal>.key``) signs them, the workers verify and act, and the
CLI waits for their answer (ids, states, notes; never a value) in the result backend.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from celery import Celery

from rotation import errors
from rotation.access.requests import load_private_key, sign
from rotation.config import EngineSettings, RequestSettings
from rotation.errors import BackendUnavailable, ConfigurationError, KeyturnError
from rotation.scheduler.tasks import MANUAL

__all__ = ["operator_principal", "request", "submit"]

_app: Celery | None = None
_lock = threading.Lock()
_URL_CREDENTIALS = re.compile(r"(\w+://)[^/@\s]*@")


def _client() -> Celery:
    global _app
    with _lock:
        if _app is None:
            settings = EngineSettings.from_env()
            _app = Celery(
                "keyturn-cli",
                broker=settings.broker_url,
                backend=settings.result_backend,
                set_as_current=False,
            )
            _app.conf.update(
                task_default_queue=settings.queue,
                task_serializer="json",
                result_serializer="json",
                accept_content=["json"],
                broker_connection_retry_on_startup=True,
                # a person is waiting: an unreachable broker or result backend is said at once
                broker_connection_timeout=3,
                task_publish_retry_policy={"max_retries": 1, "interval_start": 0.5},
                result_backend_transport_options={
                    "retry_policy": {"max_retries": 1, "interval_start": 0.5},
                    "socket_connect_timeout": 3,
                },
            )
        return _app


def operator_principal(settings: RequestSettings | None = None) -> str:
    """Who this CLI signs as: the name of its key file (``alice.key``: ``alice``)."""
    settings = settings or RequestSettings.from_env()
    if settings.operator_key is None:
        raise ConfigurationError(
            "manual actions are signed requests: set KEYTURN_OPERATOR_KEY to your private key "
            "(create one with `keyturn keys generate NAME` and give NAME.pub to the workers' "
            "KEYTURN_OPERATOR_KEYS)"
        )
    return Path(settings.operator_key).stem


def _reason(exc: BaseException) -> str:
    """The root cause's first line (Celery wraps a refused connection in a vague error)."""
    while (exc.__cause__ or exc.__context__) is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return _URL_CREDENTIALS.sub(r"\1", f"{type(exc).__name__}: {exc}".splitlines()[0])


def submit(task: str, kwargs: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send ``task`` with ``kwargs`` and wait up to ``timeout`` seconds for its answer."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    client = _client()
    if client.conf.result_backend is None:
        raise ConfigurationError(
            "the CLI waits for the workers' answer: set KEYTURN_RESULT_BACKEND (the workers' "
            "result backend; the default is the broker when it is Redis)"
        )
    try:
        # a worker reaching it later discards it: the request has expired by then anyway
        pending = client.send_task(task, kwargs=kwargs, expires=timeout)
    except Exception as exc:  # kombu/redis errors vary; none of them carries a value
        raise BackendUnavailable(
            f"could not send the request to the workers ({_reason(exc)}); nothing was done"
        ) from None
    try:
        answer = pending.get(timeout=timeout, propagate=True)
    except CeleryTimeout:
        raise BackendUnavailable(
            f"no worker answered within {timeout:.0f}s (are workers running on queue "
            f"{client.conf.task_default_queue!r}?); the request expired unanswered and "
            "nothing was done"
        ) from None
    except KeyturnError:
        raise
    except Exception as exc:
        raise BackendUnavailable(f"the workers failed the request ({_reason(exc)})") from None
    pending.forget()
    if not isinstance(answer, dict):
        raise BackendUnavailable(f"the workers answered {type(answer).__name__}, not an answer")
    return answer


def request(action: str, args: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Ask the workers to do ``action`` with ``args``, signed by this operator's key at ``now``
    (the ledger's clock); the answer, or the workers' refusal raised as its Keyturn error."""
    settings = RequestSettings.from_env()
    actor = operator_principal(settings)
    assert settings.operator_key is not None
    key = load_private_key(settings.operator_key)
    envelope = sign(key, action=action, args=args, actor=actor, now=now, ttl=settings.ttl)
    answer = submit(MANUAL[action], {**args, "signed": envelope}, settings.ttl.total_seconds())
    if answer.get("ok"):
        return answer
    raise _as_error(str(answer.get("error")), str(answer.get("message")))


def _as_error(name: str, message: str) -> KeyturnError:
    """The workers' refusal as the Keyturn error it was (so the exit status matches)."""
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, KeyturnError)):
        cls = KeyturnError
    error = cls.__new__(cls)
    KeyturnError.__init__(error, message)
    return error
