"""Kafka topics of the public contract v1: names, keys, partitioning and configs."""

from __future__ import annotations

from dataclasses import dataclass, field

RETAIN_FOREVER = "-1"
SEVEN_DAYS_MS = str(7 * 24 * 3600 * 1000)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic: its name, what its records are keyed by and carry, and its configs."""

    name: str
    key: str
    value: str
    configs: dict[str, str] = field(default_factory=dict)
    internal: bool = False


GOAL_EVENTS = TopicSpec(
    name="okr.goal-events.v1",
    key="stream_id (objective or KPI id); watermarks: none",
    value=(
        "one event (events.GOAL_EVENT_CLASSES) as canonical JSON; header okr-event-id. "
        "Also, on every partition about once a second, the relay's watermark: "
        '{"watermark": N} with header okr-content: watermark (the log is relayed up to '
        "position N); consumers of events skip it"
    ),
    configs={"retention.ms": RETAIN_FOREVER, "cleanup.policy": "delete"},
)
KPI_READINGS = TopicSpec(
    name="okr.kpi-readings.v1",
    key=(
        "kpi_id (integrations); relay batches: none, each on the partition its KPIs' ids go "
        "to (murmur2, as keyed), so a KPI's readings share one partition either way"
    ),
    value=(
        "from the relay: a JSON array of reading.recorded events (header okr-content: "
        "reading-batch), and watermarks as on okr.goal-events.v1; from integrations: one "
        "reading JSON object with org_id"
    ),
    configs={"retention.ms": SEVEN_DAYS_MS, "cleanup.policy": "delete"},
)
DETECTIONS = TopicSpec(
    name="okr.detections.v1",
    key="subject_id",
    value="detection.raised / detection.resolved events as canonical JSON",
    configs={"retention.ms": RETAIN_FOREVER, "cleanup.policy": "delete"},
)
READINGS_DLQ = TopicSpec(
    name="okr.readings-dlq.v1",
    key="the original key",
    value='{"reason": str, "topic", "partition", "offset", "key", "value": original text}',
    configs={"retention.ms": SEVEN_DAYS_MS, "cleanup.policy": "delete"},
)
KR_MEASUREMENTS = TopicSpec(
    name="okr.kr-measurements.v1",
    key="none: bundles go to the partition of their objectives' ids (murmur2, as keyed)",
    value="processor-internal: KR measurement bundles (objective, cause), and watermarks",
    configs={"retention.ms": SEVEN_DAYS_MS, "cleanup.policy": "delete"},
    internal=True,
)

PUBLIC_TOPICS: tuple[TopicSpec, ...] = (GOAL_EVENTS, KPI_READINGS, DETECTIONS, READINGS_DLQ)
ALL_TOPICS: tuple[TopicSpec, ...] = (*PUBLIC_TOPICS, KR_MEASUREMENTS)

# Record headers (bytes values, UTF-8).
HEADER_EVENT_ID = "okr-event-id"
HEADER_EVENT_TYPE = "okr-event-type"
HEADER_POSITION = "okr-position"
HEADER_CONTENT = "okr-content"
HEADER_WATERMARK = "okr-watermark"
CONTENT_READING_BATCH = "reading-batch"
CONTENT_WATERMARK = "watermark"
