"""Composition root of the processor: `python -m services.processor.main`."""

from __future__ import annotations

import logging
import os
import time

import faust

from services.eventstore.store import EventStore
from services.kafka.admin import PartitionMismatchError, ensure_topics, wait_for_broker
from services.processor.app import build_app
from services.processor.projector import Projector
from services.processor.replay import rebuild
from services.processor.runtime import tune_gc
from services.projectionstore.db import Database, DatabaseUnavailableError, lasting
from services.projectionstore.meta import ensure_schema
from services.projectionstore.migrations import migrate
from services.projectionstore.schema import PROJECTION_SCHEMA_VERSION
from services.settings import Settings, load_settings

log = logging.getLogger("okrstream.processor")
WRITER_CACHE_KIB = 32 * 1024  # SQLite page cache of the projection writer
BACKOFF_MIN_S = 0.5  # waiting for an unreachable projection store at start-up
BACKOFF_MAX_S = 10.0


def _unavailable(exc: DatabaseUnavailableError, backoff: float) -> None:
    """Log an outage and let the caller wait; exit on a misconfiguration (lasting)."""
    if lasting(str(exc)):
        raise SystemExit(f"processor: {exc}")
    log.warning("projection store unavailable (%s); retrying in %.1f s", exc, backoff)


def open_projection_store(settings: Settings) -> Database:
    """The projection store with its tables, as soon as it can be opened: an unreachable
    database is logged and tried again with backoff (exiting would have `okrstream up`
    restart the processor over and over, and give up on the whole stack during an outage of
    a minute)."""
    backoff = BACKOFF_MIN_S
    while True:
        try:
            db = Database.from_settings(
                settings, settings.projections_db_path, sqlite_cache_kib=WRITER_CACHE_KIB
            )
        except DatabaseUnavailableError as exc:
            _unavailable(exc, backoff)
        else:
            try:
                ensure_schema(db)
                return db
            except DatabaseUnavailableError as exc:
                db.close()
                _unavailable(exc, backoff)
        time.sleep(backoff)
        backoff = min(backoff * 2, BACKOFF_MAX_S)


def main() -> None:
    """Create topics and tables, rebuild when the projection schema is older, then run the
    faust worker until SIGTERM."""
    settings = load_settings()
    tune_gc()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    wait_for_broker(settings.bootstrap_servers, timeout_s=60)
    try:
        ensure_topics(
            settings.bootstrap_servers,
            settings.kafka_partitions,
            settings.kafka_replication_factor,
        )
    except PartitionMismatchError as exc:
        raise SystemExit(f"processor: {exc}") from None
    db = open_projection_store(settings)
    # One worker brings the store to this release's schema; the others starting with it
    # wait, then find it done.
    with db.exclusive("rebuild"):
        version = migrate(db)  # in place where the schema change allows it
        if version < PROJECTION_SCHEMA_VERSION:
            log.info("projection schema v%s < v%s: rebuilding", version, PROJECTION_SCHEMA_VERSION)
            store = EventStore.from_settings(settings)
            try:
                stats = rebuild(db, store)
            finally:
                store.close()
            log.info("rebuilt generation %s from %s events", stats.generation, stats.events)
    app = build_app(settings, Projector(db))
    worker = faust.Worker(app, loglevel=settings.log_level, override_logging=False, quiet=True)
    print(f"processor started (group {settings.processor_group}, pid {os.getpid()})", flush=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
