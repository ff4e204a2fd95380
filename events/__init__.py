"""Every event type of okrstream, once: the envelope, the codec and the hash chain.

Imports nothing internal. The same classes serve the event store and the Kafka topics.
"""

from events.codec import (
    ALIASES,
    EVENT_CLASSES,
    EVENT_TYPES,
    GOAL_EVENT_CLASSES,
    EventDecodeError,
    decode,
    decode_dict,
    encode,
    resolve_type,
    to_json_dict,
    upcast,
)
from events.detections import DetectionRaised, DetectionResolved
from events.envelope import Event, FiniteFloat, Period, UtcDatetime
from events.goals import (
    KeyResultAdded,
    KeyResultCheckedIn,
    KeyResultPromoted,
    KeyResultRemoved,
    KeyResultRetargeted,
    KeyResultRevised,
    KeyResultReweighted,
    ObjectiveArchived,
    ObjectiveClosed,
    ObjectiveDrafted,
    ObjectiveRealigned,
    ObjectiveReopened,
    ObjectiveRescheduled,
    ObjectiveRevised,
)
from events.hashing import ChainBreak, canonical_bytes, compute_hash, seal, verify_chain
from events.kpis import KpiDefined, KpiRetargeted, KpiRetired, KpiRevised, ReadingRecorded

__all__ = [
    "ALIASES",
    "EVENT_CLASSES",
    "EVENT_TYPES",
    "GOAL_EVENT_CLASSES",
    "ChainBreak",
    "DetectionRaised",
    "DetectionResolved",
    "Event",
    "EventDecodeError",
    "FiniteFloat",
    "KeyResultAdded",
    "KeyResultCheckedIn",
    "KeyResultPromoted",
    "KeyResultRemoved",
    "KeyResultRetargeted",
    "KeyResultRevised",
    "KeyResultReweighted",
    "KpiDefined",
    "KpiRetargeted",
    "KpiRetired",
    "KpiRevised",
    "ObjectiveArchived",
    "ObjectiveClosed",
    "ObjectiveDrafted",
    "ObjectiveRealigned",
    "ObjectiveReopened",
    "ObjectiveRescheduled",
    "ObjectiveRevised",
    "Period",
    "ReadingRecorded",
    "UtcDatetime",
    "canonical_bytes",
    "compute_hash",
    "decode",
    "decode_dict",
    "encode",
    "resolve_type",
    "seal",
    "to_json_dict",
    "upcast",
    "verify_chain",
]
