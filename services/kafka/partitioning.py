"""Where a key's records go: Kafka's default partitioner, for producers that choose the
partition themselves (the relay and Kafka-mode ingest pack the readings of a partition's
KPIs into shared records; the processor sends an objective's measurements where its goal
events are)."""

from __future__ import annotations

import functools

from kafka.partitioner.default import murmur2


def partition_of(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2 of the key, as kafka-python's and
    the Java client's producers use) gives records keyed `key` on a topic of `partitions`."""
    return _partition_of(key.encode(), partitions)


@functools.lru_cache(maxsize=200_000)
def _partition_of(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions
