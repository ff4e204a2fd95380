"""Shared fixtures: the embedded broker, PostgreSQL, settings per storage backend."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.broker.embedded import EmbeddedBroker
from services.settings import Settings
from tests.support import postgres
from tests.support.ports import free_port

BACKENDS = ("sqlite", "postgres")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One embedded Tansu broker per test session, on a free port, topics created."""
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(free_port(), partitions=4, log_path=log) as running:
        yield running


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """An embedded broker of this test only, for tests that need topics nobody else wrote."""
    with EmbeddedBroker(free_port(), partitions=4, log_path=tmp_path / "tansu.log") as running:
        yield running


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database of this test run, dropped at the end."""
    url = postgres.create_database()
    try:
        yield url
    finally:
        postgres.drop_database(url)


@pytest.fixture
def unique_group() -> str:
    """A consumer group id of this test only (Tansu joins stall on reused groups)."""
    return f"test-{uuid.uuid4().hex[:10]}"


def make_settings(
    backend: str, data_dir: Path, pg_database: str | None, **extra: object
) -> Settings:
    database_url = postgres.create_schema(pg_database) if backend == "postgres" else None
    assert backend in BACKENDS
    if backend == "postgres":
        assert pg_database is not None
    return Settings(data_dir=data_dir, database_url=database_url, **extra)  # type: ignore[arg-type]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each integration test that takes it runs on SQLite and on PostgreSQL."""
    return str(request.param)


@pytest.fixture
def settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings for the test's backend: a fresh data dir, and a fresh schema on PostgreSQL."""
    pg = request.getfixturevalue("pg_database") if backend == "postgres" else None
    return make_settings(backend, tmp_path / "data", pg)
