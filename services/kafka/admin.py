"""Topic administration and readiness checks with kafka-python.

kafka-python's admin `list_topics`/`describe_topics` fail against Tansu (an unknown ACL
operation in the metadata answer), so metadata goes through a plain consumer.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable

from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, NoBrokersAvailable, TopicAlreadyExistsError

from contracts.topics import ALL_TOPICS, TopicSpec


def wait_for_broker(bootstrap: str, timeout_s: float = 30.0) -> None:
    """Block until the broker answers a metadata request; TimeoutError otherwise."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=bootstrap,
                request_timeout_ms=3000,
                api_version_auto_timeout_ms=2000,
            )
            try:
                consumer.topics()
                return
            finally:
                consumer.close()
        except (NoBrokersAvailable, KafkaError, OSError) as exc:
            last = exc
            time.sleep(0.1)
    raise TimeoutError(f"Kafka at {bootstrap} did not answer within {timeout_s:.0f} s: {last}")


def topic_partitions(bootstrap: str) -> dict[str, int]:
    """Every topic the broker knows, with its partition count."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        return {t: len(consumer.partitions_for_topic(t) or ()) for t in consumer.topics()}
    finally:
        consumer.close()


class PartitionMismatchError(Exception):
    """A topic exists with another partition count than the configured one."""


def ensure_topics(
    bootstrap: str,
    partitions: int,
    replication_factor: int = 1,
    specs: Iterable[TopicSpec] = ALL_TOPICS,
) -> None:
    """Create the topics that do not exist yet, with the contract's configs; raise
    PartitionMismatchError when one exists with another partition count. (The processor
    routes KR measurements to their objective's partition, and the relay sends watermarks
    to every partition, both from the configured count: a mismatch would send them to the
    wrong or to too few partitions.)"""
    specs = list(specs)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="okrstream-admin")
    try:
        for spec in specs:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(
                    [
                        NewTopic(
                            spec.name, partitions, replication_factor, topic_configs=spec.configs
                        )
                    ]
                )
    finally:
        admin.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        known = topic_partitions(bootstrap)
        if all(known.get(s.name) for s in specs):
            wrong = [f"{s.name} has {known[s.name]}" for s in specs if known[s.name] != partitions]
            if wrong:
                raise PartitionMismatchError(
                    f"OKR_KAFKA_PARTITIONS is {partitions} but {'; '.join(wrong)} partitions:"
                    " set it to the topics' count (or recreate the topics, which moves every key)"
                )
            return
        time.sleep(0.1)
    raise TimeoutError(f"topics not visible after creation: {[s.name for s in specs]}")
