"""The one settings object of every okrstream process, read from `OKR_*` variables.

Validated at start-up: a bad value stops the process with a message that names the variable.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from psycopg.conninfo import make_conninfo
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Port = int


class Settings(BaseSettings):
    """Configuration of okrstream (see API.md, "Configuration")."""

    model_config = SettingsConfigDict(env_prefix="OKR_", extra="ignore", frozen=True)

    data_dir: Path = Field(
        default=Path("./var/okrstream"), description="SQLite files, tokens, logs"
    )
    http_host: str = "127.0.0.1"
    http_port: Port = Field(default=8000, ge=1, le=65535)
    http_workers: int = Field(
        default=1, ge=1, le=64, description="front door processes (uvicorn workers)"
    )
    kafka_bootstrap: str | None = Field(
        default=None, description="host:port[,host:port]; unset = start the embedded broker"
    )
    kafka_port: Port = Field(default=9092, ge=1, le=65535, description="embedded broker port")
    database_url: str | None = Field(
        default=None, description="unset = SQLite in the data dir; postgresql://… for PostgreSQL"
    )
    # Short group timeouts: the embedded broker evicts dead members only by session timeout.
    kafka_session_timeout_ms: int = Field(default=6_000, ge=1_000)
    kafka_rebalance_timeout_ms: int = Field(default=6_000, ge=1_000)
    kafka_max_poll_interval_ms: int = Field(default=10_000, ge=1_000)
    kafka_partitions: int = Field(default=4, ge=1, le=256, description="partitions per topic")
    kafka_replication_factor: int = Field(default=1, ge=1)
    relay_batch_size: int = Field(default=5_000, ge=1, le=100_000)
    relay_poll_interval_s: float = Field(default=0.02, gt=0, le=10)
    relay_readings_per_record: int = Field(default=100, ge=1, le=10_000)
    ingest_mode: Literal["store", "kafka"] = Field(
        default="store", description="store = via the event store (outbox); kafka = produce"
    )
    max_readings_per_request: int = Field(default=10_000, ge=1)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    processor_group: str = "okrstream-processor"
    unknown_kpi_grace_s: float = Field(
        default=300.0,
        ge=0,
        le=86_400,
        description="how long a reading produced straight to Kafka waits for its KPI's"
        " definition before it is dead-lettered as unknown",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        PostgresParams.from_url(value)  # the whole URL is checked here, not on first use
        return value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _host_ports(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        for part in value.split(","):
            host, sep, port = part.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"{part!r} is not host:port")
        return value

    @property
    def embedded_broker(self) -> bool:
        """Whether this process group runs the embedded Tansu broker."""
        return self.kafka_bootstrap is None

    @property
    def bootstrap_servers(self) -> str:
        """Where Kafka clients connect."""
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"

    @property
    def uses_postgres(self) -> bool:
        return self.database_url is not None

    @cached_property
    def postgres(self) -> PostgresParams:
        """Connection parameters parsed from OKR_DATABASE_URL."""
        assert self.database_url is not None
        return PostgresParams.from_url(self.database_url)

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def events_db_path(self) -> Path:
        return self.data_dir / "events.sqlite"

    @property
    def projections_db_path(self) -> Path:
        return self.data_dir / "projections.sqlite"

    @property
    def tokens_db_path(self) -> Path:
        return self.data_dir / "tokens.sqlite"


URL_FORM = "postgresql://user[:password]@host[:port]/dbname[?schema=name]"
# Lowercase only: the event store quotes the schema name and the projection stores name it
# unquoted in search_path (where PostgreSQL folds it to lowercase); both must mean one schema.
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresParams:
    """host, port, user, password, dbname and schema of a postgresql:// URL."""

    def __init__(
        self, host: str, port: int, user: str, password: str, dbname: str, schema: str
    ) -> None:
        self.host, self.port, self.user = host, port, user
        self.password, self.dbname, self.schema = password, dbname, schema

    @classmethod
    def from_url(cls, url: str) -> PostgresParams:
        """Parse and check `url`; ValueError says what is wrong with it (never the password)."""
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError(
                f"unsupported scheme {parts.scheme!r}: use {URL_FORM} "
                "or leave OKR_DATABASE_URL unset for SQLite"
            )
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0:  # also what a malformed or out-of-range port gave
            given = parts.netloc.rpartition("@")[2].rpartition(":")[2]
            raise ValueError(f"port {given!r} is not a number from 1 to 65535 (use {URL_FORM})")
        dbname = unquote(parts.path.lstrip("/"))
        if "/" in dbname:
            raise ValueError(f"database name {dbname!r} contains '/' (use {URL_FORM})")
        schema = "public"
        seen: set[str] = set()
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name.startswith("ssl"):
                raise ValueError(
                    f"option {name!r} is not taken from the URL: TLS is set with libpq's"
                    f" environment variables (PG{name.upper()}={value}), which every"
                    " connection okrstream opens uses"
                )
            if name != "schema":
                raise ValueError(f"unknown option {name!r}: the only option is ?schema=name")
            if name in seen:
                raise ValueError("?schema= is given more than once")
            seen.add(name)
            if not SCHEMA_NAME.fullmatch(value):
                raise ValueError(
                    f"schema {value!r} is not a lowercase SQL name "
                    "(letters, digits and _, at most 63, not starting with a digit)"
                )
            schema = value
        if parts.query and not seen:
            raise ValueError(f"options {parts.query!r} are not name=value (use {URL_FORM})")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=port or 5432,
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password or ""),
            dbname=dbname or "postgres",
            schema=schema,
        )

    def conninfo(self) -> str:
        """A libpq connection string. Built by psycopg, which quotes each value: a password,
        user or database name may hold spaces, quotes or backslashes (percent-encoded in
        the URL)."""
        return make_conninfo(
            host=self.host,
            port=self.port,
            user=self.user,
            dbname=self.dbname,
            password=self.password or None,  # None: no keyword (libpq's own lookup applies)
            options=f"-c search_path={self.schema}",  # a checked SQL name: no quoting needed
        )


class SettingsError(SystemExit):
    """A configuration error, reported in one readable block."""


def load_settings() -> Settings:
    """Read and validate the settings; exit with a clear message on a bad value."""
    try:
        return Settings()
    except ValidationError as exc:
        lines = ["okrstream: invalid configuration:"]
        for error in exc.errors():
            name = "OKR_" + "_".join(str(p) for p in error["loc"]).upper()
            given = error.get("input")
            if name == "OKR_DATABASE_URL" and isinstance(given, str):
                given = without_password(given)
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"  {name}={given!r}: {message}")
        raise SettingsError("\n".join(lines)) from None


def without_password(url: str) -> str:
    """`url` with its password (if any) replaced by `***`, for messages and logs."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    if not at or not colon:
        return url
    return parts._replace(netloc=f"{user}:***@{host}").geturl()
