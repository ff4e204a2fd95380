"""The projector's objective-state cache (services.processor.statecache)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.processor.statecache import StateCache


def test_passes_over_more_keys_than_fit_keep_hitting_the_held_ones() -> None:
    cache: StateCache[int] = StateCache(size=3, idle_s=10)
    hits = 0
    for p in range(4):  # passes in key order over 5 keys, 2 s apart
        now = 2.0 * p
        for i, key in enumerate("abcde"):
            hits += cache.get(key, now) is not None
            cache.put_all([(key, 10 * p + i)], now)
    # A FIFO or LRU cache of 3 would hit nothing: each key is evicted just before its turn.
    assert hits == 3 * 3
    assert [cache.get(k, 8.0) for k in "abcde"] == [30, 31, 32, None, None]


def test_new_keys_replace_only_entries_idle_for_idle_s_least_recently_used_first() -> None:
    cache: StateCache[str] = StateCache(size=3, idle_s=10)
    cache.put_all([("a", "A"), ("b", "B"), ("c", "C")], now=0)
    cache.put_all([("d", "D")], now=9.9)
    assert "d" not in cache, "nothing idle for 10 s yet"
    assert cache.get("b", 15) == "B"
    cache.put_all([("d", "D"), ("e", "E"), ("f", "F")], now=20)
    # a and c were idle since 0; b was used at 15, so f finds no idle place.
    assert ("a" in cache, "c" in cache, "b" in cache) == (False, False, True)
    assert (cache.get("d", 20), cache.get("e", 20), cache.get("f", 20)) == ("D", "E", None)


def test_a_held_key_is_updated_in_place_whatever_the_size() -> None:
    cache: StateCache[int] = StateCache(size=1, idle_s=10)
    cache.put_all([("a", 1)], now=0)
    cache.put_all([("a", 2)], now=1)
    assert cache.get("a", 1) == 2
    cache.clear()
    assert len(cache) == 0
    assert cache.get("a", 2) is None


def test_a_cache_of_size_zero_holds_nothing() -> None:
    cache: StateCache[int] = StateCache(size=0, idle_s=0)
    cache.put_all([("a", 1)], now=5)
    assert len(cache) == 0


ops = st.lists(
    st.tuples(st.sampled_from(["get", "put"]), st.sampled_from("abcdefg"), st.integers(0, 9)),
    max_size=60,
)


@given(ops, st.integers(0, 4), st.sampled_from([0.0, 1.0, 3.0, 100.0]))
def test_the_cache_stays_bounded_and_returns_only_the_latest_value(
    steps: list[tuple[str, str, int]], size: int, idle_s: float
) -> None:
    cache: StateCache[int] = StateCache(size=size, idle_s=idle_s)
    latest: dict[str, int] = {}
    for now, (op, key, value) in enumerate(steps):
        if op == "put":
            cache.put_all([(key, value)], float(now))
            latest[key] = value
        else:
            found = cache.get(key, float(now))
            assert found is None or found == latest[key]
        assert len(cache) <= size
