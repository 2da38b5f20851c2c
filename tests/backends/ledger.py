"""Ledger databases for tests: a template migrated once per session, cloned per test.

Uses the machine's PostgreSQL (``KEYTURN_TEST_PG``, default postgresql://postgres@127.0.0.1:5432).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from rotation.ledger.db import Ledger
from rotation.ledger.migrate import upgrade

ADMIN_URL = os.environ.get("KEYTURN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin() -> psycopg.Connection:
    return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)


def _url(dbname: str) -> str:
    base = ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{dbname}"


def _drop(dbname: str) -> None:
    with _admin() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
        )


@pytest.fixture(scope="session")
def ledger_template() -> Iterator[str]:
    """A database migrated to head, used as the template of every test's ledger."""
    name = f"kt_template_{uuid.uuid4().hex[:8]}"
    with _admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    upgrade(_url(name))
    yield name
    _drop(name)


@pytest.fixture
def ledger_url(ledger_template: str) -> Iterator[str]:
    """A fresh ledger database (cloned from the template) for one test."""
    name = f"kt_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(ledger_template)
            )
        )
    yield _url(name).replace("postgresql://", "postgresql+psycopg://", 1)
    _drop(name)


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    instance = Ledger(ledger_url)
    yield instance
    instance.dispose()


@pytest.fixture
def empty_database() -> Iterator[str]:
    """An empty database (no schema), for migration tests."""
    name = f"kt_empty_{uuid.uuid4().hex[:8]}"
    with _admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield _url(name).replace("postgresql://", "postgresql+psycopg://", 1)
    _drop(name)
