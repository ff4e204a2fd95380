"""Where a key's records go: Kafka's default partitioner, for producers that choose the
partition themselves (the relay and Kafka-mode ingest pack the readings of a partition's
KPIs into shared records; the processor sends an objective's measurements where its goal
events are)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import TypeVar

from kafka.partitioner.default import murmur2

T = TypeVar("T")


def partition_of(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2 of the key, as kafka-python's and
    the Java client's producers use) gives records keyed `key` on a topic of `partitions`."""
    return _partition_of(key.encode(), partitions)


@functools.lru_cache(maxsize=200_000)
def _partition_of(key: bytes, partitions: int) -> int:
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def pack(
    keyed: Iterable[tuple[str, T]], per_record: int, partitions: int
) -> Iterator[tuple[int, list[T]]]:
    """(partition, up to `per_record` items) for items keyed as records would be: the items
    whose keys share a partition together, in their order; partitions in order of first
    appearance. The relay and Kafka-mode ingest pack reading batches with it."""
    by_partition: dict[int, list[T]] = {}
    for key, item in keyed:
        by_partition.setdefault(partition_of(key, partitions), []).append(item)
    for part, items in by_partition.items():
        for i in range(0, len(items), per_record):
            yield part, items[i : i + per_record]
