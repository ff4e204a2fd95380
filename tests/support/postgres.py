"""A fresh PostgreSQL database per test run (the machine's server at 127.0.0.1:5432)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

ADMIN_URL = os.environ.get("OKR_TEST_POSTGRES_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")


def create_database() -> str:
    """Create an empty database; return its URL. Fails loudly when PostgreSQL is absent."""
    name = f"okr_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1].split("?")[0]
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_schema(database_url: str) -> str:
    """A fresh schema inside the run's database; returns a URL that selects it."""
    schema = f"s_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return f"{database_url}?schema={schema}"


def _admin(sql: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


@contextmanager
def fresh_database() -> Iterator[str]:
    """A database of this test only (its URL), dropped afterwards."""
    url = create_database()
    try:
        yield url
    finally:
        drop_database(url)


@contextmanager
def refusing_connections(url: str) -> Iterator[None]:
    """While the block runs, the database of `url` refuses new connections and its open
    sessions are ended: an outage, as a client sees it."""
    name = url.rsplit("/", 1)[1].split("?")[0]
    _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    try:
        _admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        yield
    finally:
        _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
