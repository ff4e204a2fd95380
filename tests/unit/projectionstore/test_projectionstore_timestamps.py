"""The stored text form of timestamps (services.projectionstore.schema.iso / parse_iso):
it sorts like the instants, round-trips, and its memo never mixes up two instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from services.projectionstore.schema import iso, parse_iso

offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda m: timezone(timedelta(minutes=m))
)
instants = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 30), timezones=st.just(UTC)
)


@given(instants, offsets)
def test_text_is_utc_with_microseconds_and_round_trips(at: datetime, tz: timezone) -> None:
    text = iso(at.astimezone(tz))  # the same instant seen from another offset
    assert text == at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert parse_iso(text) == at
    assert iso(at) == text


@given(st.lists(instants, min_size=2, max_size=50))
def test_text_sorts_like_the_instants_even_when_memoised(ats: list[datetime]) -> None:
    texts = [iso(a) for a in ats] + [iso(a) for a in reversed(ats)]  # misses, then hits
    assert texts[: len(ats)] == texts[len(ats) :][::-1]
    assert sorted(texts[: len(ats)]) == [iso(a) for a in sorted(ats)]
    assert len(set(texts)) == len(set(ats))
