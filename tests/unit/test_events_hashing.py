"""The hash chain: tamper evidence per stream; canonical encoding properties."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from uuid import uuid4

import orjson
from hypothesis import given
from hypothesis import strategies as st

import events
from tests.support.samples import sample


def chain(n: int = 4) -> list[events.Event]:
    stream = uuid4()
    out: list[events.Event] = []
    prev: str | None = None
    names = ["objective.drafted", "objective.revised", "objective.closed", "objective.reopened"]
    for i in range(n):
        e = events.seal(sample(names[i % len(names)], stream_id=stream, version=i + 1), prev)
        out.append(e)
        prev = e.hash
    return out


def test_an_intact_chain_verifies() -> None:
    assert events.verify_chain(chain()) is None


def test_first_event_has_no_prev_hash_and_links_follow() -> None:
    c = chain()
    assert c[0].prev_hash is None
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(c))


def test_a_changed_byte_breaks_the_chain() -> None:
    c = chain()
    raw = events.encode(c[1]).replace(b"Delight every customer", b"Delight every customeR")
    c[1] = events.decode(raw)
    broken = events.verify_chain(c)
    assert broken is not None
    assert broken.stream_version == 2
    assert "hash" in broken.reason


def test_a_dropped_event_breaks_the_chain() -> None:
    c = chain()
    del c[2]
    broken = events.verify_chain(c)
    assert broken is not None
    assert broken.stream_version == 4


def test_a_reordering_breaks_the_chain() -> None:
    c = chain()
    c[1], c[2] = c[2], c[1]
    broken = events.verify_chain(c)
    assert broken is not None
    assert broken.stream_version in (2, 3)


def test_a_rehashed_forgery_still_breaks_the_link() -> None:
    c = chain()
    forged = c[1].model_copy(update={"title": "Forged"})
    c[1] = events.seal(forged, c[0].hash)  # attacker recomputes this event's hash
    broken = events.verify_chain(c)
    assert broken is not None
    assert broken.stream_version == 3  # the next event no longer links
    assert "prev_hash" in broken.reason


offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda m: timezone(timedelta(minutes=m))
)
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@given(title=st.text(min_size=1, max_size=200), at=instants, tz=offsets)
def test_canonical_encoding_is_stable_across_offsets_and_round_trips(
    title: str, at: datetime, tz: timezone
) -> None:
    a = sample("objective.revised", title=title, occurred_at=at)
    b = events.decode_dict({**events.to_json_dict(a), "occurred_at": at.astimezone(tz).isoformat()})
    assert events.canonical_bytes(a) == events.canonical_bytes(b)
    assert events.compute_hash(a) == events.compute_hash(b)
    assert events.decode(events.encode(a)) == a


@given(value=st.floats(allow_nan=False, allow_infinity=False, width=64))
def test_canonical_encoding_of_floats_round_trips_exactly(value: float) -> None:
    e = sample("reading.recorded", value=value)
    back = events.decode(events.encode(e))
    assert isinstance(back, events.ReadingRecorded)
    assert back.value == value
    assert events.compute_hash(back) == events.compute_hash(e)


@given(title=st.text(min_size=1, max_size=30), owner=st.text(min_size=1, max_size=30))
def test_key_order_of_the_input_does_not_change_the_hash(title: str, owner: str) -> None:
    base = events.to_json_dict(sample("objective.revised", title=title, owner=owner))
    forward = events.decode_dict(base)
    backward = events.decode_dict(dict(reversed(list(base.items()))))
    assert events.compute_hash(forward) == events.compute_hash(backward)
    assert orjson.loads(events.canonical_bytes(forward)) == orjson.loads(
        events.canonical_bytes(backward)
    )
