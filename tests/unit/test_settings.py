"""Settings: defaults per API.md, clear errors on bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

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
