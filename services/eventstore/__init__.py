"""The event store: eventsourcing's recorder (SQLite or PostgreSQL) holding okrstream events.

Its notification log is the transactional outbox that the relay follows.
"""

from services.eventstore.store import (
    ConcurrencyError,
    EventStore,
    StoredNotification,
    StoreUnavailableError,
)

__all__ = ["ConcurrencyError", "EventStore", "StoreUnavailableError", "StoredNotification"]
