"""The hash chain: tamper evidence per stream; canonical encoding properties."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID, uuid4

import orjson
from hypothesis import given
from hypothesis import strategies as st

import events
from events.hashing import StoredRow, stored_hash, verify_stored_stream
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


# -- the stored form: what audit verify checks -------------------------------------------------


def rows_of(chain_: list[events.Event]) -> list[StoredRow]:
    """The stream as its rows keep it: (stream version, type, stored JSON)."""
    return [(e.stream_version, e.type, events.encode(e)) for e in chain_]


def v1_check_in(stream_id: UUID, version: int, prev: str | None, confidence: float) -> bytes:
    """A key_result.check_in as the release before schema v2 stored it: the alias type, a
    percent confidence, sealed by the same rule over that form."""
    data = events.to_json_dict(
        sample("key_result.checked_in", stream_id=stream_id, version=version)
    )
    data.update(type="key_result.check_in", schema_version=1, confidence=confidence, prev_hash=prev)
    data.pop("hash")
    data["hash"] = stored_hash(data)
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def test_an_intact_stored_stream_verifies() -> None:
    c = chain()
    assert verify_stored_stream(c[0].stream_id, rows_of(c)) is None


def test_an_old_schema_event_verifies_over_its_stored_form_not_its_upcast_one() -> None:
    c = chain(2)
    raw = v1_check_in(c[0].stream_id, 3, c[1].hash, 80.0)
    rows = [*rows_of(c), (3, "key_result.check_in", raw)]
    assert verify_stored_stream(c[0].stream_id, rows) is None
    # the decoded event is upcast (confidence 0.8, schema v2): its hash no longer matches it
    upcast = events.decode(raw)
    assert isinstance(upcast, events.KeyResultCheckedIn)
    assert upcast.confidence == 0.8
    assert upcast.hash != events.compute_hash(upcast)


def test_a_row_stored_under_another_version_than_its_json_breaks() -> None:
    c = chain(3)
    rows = rows_of(c)
    rows[2] = (7, *rows[2][1:])  # the row's version column changed, the JSON untouched
    broken = verify_stored_stream(c[0].stream_id, rows)
    assert broken is not None
    assert broken.stream_version == 7
    assert "stored as version 7 but its JSON says version 3" in broken.reason


def test_a_row_stored_under_another_stream_or_type_breaks() -> None:
    c = chain(2)
    other = verify_stored_stream(uuid4(), rows_of(c))
    assert other is not None
    assert "its JSON says stream" in other.reason
    rows = rows_of(c)
    rows[1] = (2, "objective.closed", rows[1][2])
    relabelled = verify_stored_stream(c[0].stream_id, rows)
    assert relabelled is not None
    assert "stored as type 'objective.closed'" in relabelled.reason


def test_a_stored_event_that_is_not_a_json_object_breaks() -> None:
    c = chain(2)
    for state in (b"{not json", b"[1, 2]"):
        rows = [*rows_of(c)[:1], (2, c[1].type, state)]
        broken = verify_stored_stream(c[0].stream_id, rows)
        assert broken is not None
        assert broken.stream_version == 2
        assert "JSON" in broken.reason


TAMPERINGS = ("drop", "swap", "version", "type", "byte", "rehash")


@given(
    n=st.integers(min_value=2, max_value=8),
    old=st.sets(st.integers(min_value=0, max_value=7)),
    confidence=st.floats(min_value=0, max_value=100),
    how=st.sampled_from(TAMPERINGS),
    at=st.integers(min_value=0, max_value=7),
)
def test_stored_streams_verify_intact_and_break_when_tampered(
    n: int, old: set[int], confidence: float, how: str, at: int
) -> None:
    """Any mix of current and old-schema events verifies as stored; each way of tampering
    with one stored row (other than the newest alone: see the log seals) breaks the stream."""
    stream = uuid4()
    rows: list[StoredRow] = []
    prev: str | None = None
    for i in range(n):
        if i > 0 and i in old:
            raw = v1_check_in(stream, i + 1, prev, confidence)
            rows.append((i + 1, "key_result.check_in", raw))
        else:
            name = "objective.drafted" if i == 0 else "objective.revised"
            e = events.seal(sample(name, stream_id=stream, version=i + 1), prev)
            raw = events.encode(e)
            rows.append((i + 1, e.type, raw))
        prev = orjson.loads(raw)["hash"]
    assert verify_stored_stream(stream, rows) is None

    i = at % (n - 1)  # any row but the newest: each of these must break the chain
    version, type_name, raw = rows[i]
    data = orjson.loads(raw)
    if how == "drop":
        del rows[i]
    elif how == "swap":
        rows[i], rows[i + 1] = rows[i + 1], rows[i]
    elif how == "version":
        rows[i] = (version + n, type_name, raw)
    elif how == "type":
        rows[i] = (version, "objective.archived", raw)
    elif how == "byte":
        rows[i] = (version, type_name, orjson.dumps({**data, "actor": data["actor"] + "!"}))
    else:  # a forger who recomputes the changed event's own hash still breaks the next link
        forged = {**data, "actor": "mallory"}
        forged["hash"] = stored_hash(forged)
        rows[i] = (version, type_name, orjson.dumps(forged))
    assert verify_stored_stream(stream, rows) is not None
