"""Settings: defaults per API.md, clear errors on bad values."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from services.settings import PostgresParams, Settings, SettingsError, load_settings


def test_defaults_follow_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OKR_DATA_DIR", "OKR_HTTP_PORT", "OKR_KAFKA_BOOTSTRAP", "OKR_KAFKA_PORT",
                 "OKR_DATABASE_URL"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert s.data_dir == Path("./var/okrstream")
    assert s.http_port == 8000
    assert s.kafka_port == 9092
    assert s.embedded_broker
    assert s.bootstrap_servers == "127.0.0.1:9092"
    assert not s.uses_postgres


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OKR_KAFKA_BOOTSTRAP", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("OKR_DATABASE_URL", "postgresql://okr:s3cret@db:5433/okr?schema=p1")
    s = Settings()
    assert not s.embedded_broker
    assert s.bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    pg = s.postgres
    assert (pg.host, pg.port, pg.user, pg.password, pg.dbname, pg.schema) == (
        "db",
        5433,
        "okr",
        "s3cret",
        "okr",
        "p1",
    )


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("OKR_HTTP_PORT", "eighty", "OKR_HTTP_PORT"),
        ("OKR_HTTP_PORT", "70000", "OKR_HTTP_PORT"),
        ("OKR_DATABASE_URL", "mysql://x/y", "unsupported scheme"),
        ("OKR_KAFKA_BOOTSTRAP", "no-port", "host:port"),
    ],
)
def test_bad_values_stop_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert needle in str(raised.value)
    assert name in str(raised.value)


def test_postgres_url_defaults() -> None:
    pg = PostgresParams.from_url("postgresql://127.0.0.1/test")
    assert (pg.port, pg.user, pg.schema) == (5432, "postgres", "public")
    assert "dbname=test" in pg.conninfo()


@pytest.mark.parametrize(
    ("url", "user", "password", "dbname"),
    [
        ("postgresql://okr:a%20b@db/okr", "okr", "a b", "okr"),
        ("postgresql://okr:it's%20%22x%22@db/okr", "okr", 'it\'s "x"', "okr"),
        ("postgresql://okr:back%5Cslash%3D@db/okr", "okr", "back\\slash=", "okr"),
        ("postgresql://o%20'k:pw@db/my%20'db", "o 'k", "pw", "my 'db"),
        ("postgresql://okr@db/okr", "okr", None, "okr"),
    ],
)
def test_the_connection_string_keeps_every_value_whole(
    url: str, user: str, password: str | None, dbname: str
) -> None:
    """libpq splits an unquoted value at a space: a password with one broke every store
    but the event store (which is given the values one by one)."""
    parsed = conninfo_to_dict(PostgresParams.from_url(f"{url}?schema=s_1").conninfo())
    assert parsed.get("user") == user
    assert parsed.get("password") == password
    assert parsed.get("dbname") == dbname
    assert (parsed.get("host"), parsed.get("port")) == ("db", "5432")
    assert parsed.get("options") == "-c search_path=s_1"


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("postgresql://okr:s3cret@127.0.0.1:54x2/db", "port '54x2' is not a number"),
        ("postgresql://okr:s3cret@127.0.0.1:0/db", "port '0' is not a number"),
        ("postgresql://okr:s3cret@127.0.0.1:99999/db", "port '99999' is not a number"),
        ("postgresql://okr:s3cret@db/okr?sslmode=require", "PGSSLMODE=require"),
        ("postgresql://okr:s3cret@db/okr?application_name=x", "unknown option 'application_name'"),
        ("postgresql://okr:s3cret@db/okr?schema=a&schema=b", "more than once"),
        ("postgresql://okr:s3cret@db/okr?schema=", "schema '' is not a lowercase SQL name"),
        ("postgresql://okr:s3cret@db/okr?schema=x;drop", "is not a lowercase SQL name"),
        ("postgresql://okr:s3cret@db/okr?schema=Mixed", "is not a lowercase SQL name"),
        ("postgresql://okr:s3cret@db/okr/extra", "contains '/'"),
        ("postgres+psycopg://okr:s3cret@db/okr", "unsupported scheme"),
    ],
)
def test_a_malformed_database_url_is_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch, url: str, needle: str
) -> None:
    monkeypatch.setenv("OKR_DATABASE_URL", url)
    with pytest.raises(SettingsError) as raised:
        load_settings()  # not later, when something first connects
    message = str(raised.value)
    assert needle in message
    assert "OKR_DATABASE_URL=" in message
    assert "s3cret" not in message


def test_a_well_formed_database_url_is_accepted() -> None:
    s = Settings(database_url="postgres://u:p%40ss@[::1]:6000/okr_1?schema=s_1")
    pg = s.postgres
    assert (pg.host, pg.port, pg.user, pg.password, pg.dbname, pg.schema) == (
        "::1",
        6000,
        "u",
        "p@ss",
        "okr_1",
        "s_1",
    )
