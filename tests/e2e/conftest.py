"""End-to-end fixtures: `okrstream up` once per test module and storage backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import BACKENDS
from tests.support import postgres
from tests.support.stack import Stack


@pytest.fixture(scope="module", params=BACKENDS)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The running stack on SQLite files, then on PostgreSQL (a fresh schema)."""
    database_url = None
    if request.param == "postgres":
        database_url = postgres.create_schema(request.getfixturevalue("pg_database"))
    with Stack(tmp_path_factory.mktemp("stack") / "data", database_url=database_url) as running:
        yield running
