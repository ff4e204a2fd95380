"""Log seals: every write seals the log; verify_log recomputes the seals, and an expected
head noted earlier catches what rewritten seals would hide."""

from __future__ import annotations

import dataclasses
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events.hashing import (
    LOG_GENESIS,
    LogEntry,
    LogHead,
    LogSeal,
    next_seal,
    seal_digest,
    verify_log,
)


def entry(position: int, version: int = 1, state: bytes = b'{"v":1}') -> LogEntry:
    return (position, uuid4().hex, version, "reading.recorded", state)


def sealed(
    entries: list[LogEntry], cuts: list[int], base: int = 0
) -> tuple[list[LogEntry], list[LogSeal]]:
    """Seal `entries` the way the store does: one seal per write, a write ending after
    each index in `cuts`; entries after the last cut stay unsealed."""
    seals: list[LogSeal] = []
    start = 0
    for cut in sorted(set(cuts)):
        batch = [e for e in entries[start : cut + 1] if e[0] > base]
        seal = next_seal(seals[-1] if seals else None, batch, base)
        if seal is not None:
            seals.append(seal)
        start = cut + 1
    return entries, seals


def log() -> tuple[list[LogEntry], list[LogSeal]]:
    # positions with gaps, as PostgreSQL leaves them; writes of 2, 1, 3 and 2 entries
    entries = [entry(p) for p in (1, 2, 4, 5, 6, 9, 10, 11)]
    return sealed(entries, [1, 2, 5, 7])


def test_an_intact_log_verifies_and_names_its_head() -> None:
    entries, seals = log()
    report = verify_log(entries, seals)
    assert report.broken is None
    assert (report.entries, report.seals, report.unsealed, report.unanchored) == (8, 4, 0, 0)
    assert report.head == seals[-1]
    assert report.head.position == 11
    assert verify_log(entries, seals, LogHead(11, seals[-1].digest)).broken is None
    assert verify_log(entries, seals, LogHead(4, seals[1].digest)).broken is None


def test_removing_the_newest_event_breaks_its_seal() -> None:
    entries, seals = log()
    report = verify_log(entries[:-1], seals)
    assert report.broken is not None
    assert "position 11 is missing" in report.broken
    assert "ends at position 10" in report.broken


def test_removing_a_one_event_stream_from_the_middle_breaks_its_seal() -> None:
    entries, seals = log()
    del entries[3]  # position 5, sealed with 6 and 9: a reading's whole stream
    report = verify_log(entries, seals)
    assert report.broken is not None
    assert "seal at position 9" in report.broken


def test_removing_the_last_entry_of_a_seal_names_the_gap() -> None:
    entries, seals = log()
    del entries[2]  # position 4: alone in its write
    report = verify_log(entries, seals)
    assert report.broken is not None
    assert "position 4 is missing" in report.broken
    assert "from position 2 to 5" in report.broken


def test_a_changed_stream_version_or_type_breaks_the_seal() -> None:
    entries, seals = log()
    p, s, v, t, b = entries[4]
    for changed in ((p, s, v + 6, t, b), (p, s, v, "kpi.retired", b), (p, s, v, t, b + b" ")):
        tampered = [*entries[:4], changed, *entries[5:]]
        assert verify_log(tampered, seals).broken is not None


def test_newest_events_removed_with_their_seals_pass_alone_but_not_against_a_noted_head() -> None:
    entries, seals = log()
    head = LogHead(seals[-1].position, seals[-1].digest)
    assert verify_log(entries[:5], seals[:2]).broken is None  # the limit: nothing shows it
    broken = verify_log(entries[:5], seals[:2], head).broken
    assert broken is not None
    assert "no seal at that position" in broken


def test_rewritten_seals_pass_alone_but_not_against_a_noted_head() -> None:
    entries, seals = log()
    head = LogHead(seals[-1].position, seals[-1].digest)
    forged_entries = [*entries[:3], entries[4], *entries[5:]]  # position 5 removed...
    _, forged_seals = sealed(forged_entries, [1, 2, 4, 6])  # ...and every seal recomputed
    assert verify_log(forged_entries, forged_seals).broken is None
    broken = verify_log(forged_entries, forged_seals, head).broken
    assert broken is not None
    assert "expected head" in broken


def test_a_store_written_before_seals_is_reported_not_anchored() -> None:
    entries = [entry(p) for p in range(1, 9)]
    none = verify_log(entries, [])
    assert none.broken is None
    assert none.head is None
    assert none.unanchored == 8
    assert none.last_position == 8
    # the first write of the sealing release seals from its own entries on
    entries, seals = sealed(entries, [7], base=5)
    report = verify_log(entries, seals)
    assert report.broken is None
    assert report.base == 5
    assert report.unanchored == 5
    # what predates the seals is covered by its stream chains only
    changed = [(1, "x", 1, "t", b"forged"), *entries[1:]]
    assert verify_log(changed, seals).broken is None
    # a head before the seals' base cannot be checked: seals replaced after it was noted
    assert verify_log(entries, seals, LogHead(3, LOG_GENESIS)).broken is not None


def test_entries_after_the_newest_seal_are_counted_not_failed() -> None:
    entries, seals = log()
    report = verify_log([*entries, entry(12), entry(13)], seals)
    assert report.broken is None
    assert report.unsealed == 2
    assert report.head == seals[-1]


def test_seals_that_disagree_on_their_base_or_precede_it_break() -> None:
    entries, seals = log()
    rebased = [*seals[:2], dataclasses.replace(seals[2], base=1), seals[3]]
    assert verify_log(entries, rebased).broken is not None
    early = [LogSeal(0, seal_digest(LOG_GENESIS, []), 0), *seals]
    assert verify_log(entries, early).broken is not None


def test_the_genesis_seal_anchors_a_store_that_started_empty() -> None:
    """A store that started empty holds LogSeal(0, LOG_GENESIS, 0): its seals chain from
    there with base 0, so every entry is anchored; seals with another base break."""
    entries, _ = log()
    genesis = LogSeal(0, LOG_GENESIS, 0)
    sealed = [genesis, next_seal(genesis, entries[:3], 0), None]
    sealed[2] = next_seal(sealed[1], entries[3:], 0)
    report = verify_log(entries, sealed)  # type: ignore[arg-type]
    assert report.broken is None
    assert (report.base, report.unanchored, report.unsealed) == (0, 0, 0)
    assert report.seals == 2
    rebased = next_seal(None, entries[1:], entries[0][0])
    assert verify_log(entries, [genesis, rebased]).broken is not None  # type: ignore[list-item]


def test_an_entry_below_position_1_breaks() -> None:
    """No store gives one: an entry slipped in below every seal's range would hide there."""
    entries, seals = log()
    broken = verify_log([entry(0), *entries], seals).broken
    assert broken is not None
    assert "positions start at 1" in broken


def test_out_of_order_positions_break() -> None:
    entries, seals = log()
    entries[4], entries[5] = entries[5], entries[4]  # positions 6 and 9, one seal
    broken = verify_log(entries, seals).broken
    assert broken is not None
    assert "out of order" in broken


def test_a_malformed_entry_breaks_instead_of_crashing() -> None:
    entries, seals = log()
    p, s, v, t, _b = entries[0]
    bad: LogEntry = (p, s, v, t, "text, not bytes")  # type: ignore[assignment]
    broken = verify_log([bad, *entries[1:]], seals).broken
    assert broken is not None
    assert "malformed" in broken


def test_a_head_parses_from_what_verify_prints() -> None:
    digest = "ab" * 32
    assert LogHead.parse(f"42:{digest.upper()}") == LogHead(42, digest)
    assert str(LogHead(42, digest)) == f"42:{digest}"
    for bad in (
        "42",
        f"x:{digest}",
        "42:abc",
        f"42:{'zz' * 32}",
        f"-1:{digest}",
        f"4:0x{digest[2:]}",
    ):
        with pytest.raises(ValueError):
            LogHead.parse(bad)


# -- properties ------------------------------------------------------------------------------

logs = st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=30).flatmap(
    lambda steps: st.tuples(
        st.just([sum(steps[: i + 1]) for i in range(len(steps))]),  # positions, with gaps
        st.lists(st.integers(min_value=0, max_value=len(steps) - 1), min_size=1, max_size=8),
        st.lists(st.binary(max_size=40), min_size=len(steps), max_size=len(steps)),
    )
)


def build(
    positions: list[int], cuts: list[int], states: list[bytes]
) -> tuple[list[LogEntry], list[LogSeal]]:
    entries = [
        (p, f"{p:032x}", 1, "reading.recorded", s) for p, s in zip(positions, states, strict=True)
    ]
    return sealed(entries, cuts)


@given(logs)
def test_any_sealed_log_verifies_however_its_writes_were_cut(
    case: tuple[list[int], list[int], list[bytes]],
) -> None:
    entries, seals = build(*case)
    report = verify_log(entries, seals)
    assert report.broken is None
    assert report.head == seals[-1]
    assert report.unsealed == sum(1 for e in entries if e[0] > seals[-1].position)
    assert report.seals == len(seals)


@given(logs, st.integers(min_value=0), st.sampled_from(["drop", "change", "move", "insert"]))
def test_any_change_at_or_before_the_newest_seal_breaks_it(
    case: tuple[list[int], list[int], list[bytes]], pick: int, how: str
) -> None:
    entries, seals = build(*case)
    sealed_up_to = seals[-1].position
    candidates = [i for i, e in enumerate(entries) if e[0] <= sealed_up_to]
    i = candidates[pick % len(candidates)]
    p, s, v, t, b = entries[i]
    tampered = list(entries)
    if how == "drop":
        del tampered[i]
    elif how == "change":
        tampered[i] = (p, s, v, t, b + b"\x00")
    elif how == "move":  # renumbered into the gap before it, or onto a position after it
        previous = tampered[i - 1][0] if i else 0
        nxt = tampered[i + 1][0] if i + 1 < len(tampered) else p + 2
        moved = p - 1 if p - 1 > previous else (p + 1 if p + 1 < nxt else None)
        if moved is None:
            tampered[i] = (p, s, v + 1, t, b)  # no room: relabel its version instead
        else:
            tampered[i] = (moved, s, v, t, b)
    else:  # a forged entry slipped in before this one: into a gap, or renumbering the rest
        previous = tampered[i - 1][0] if i else 0
        if p - 1 > previous:
            tampered.insert(i, (p - 1, "f" * 32, 1, t, b"forged"))
        else:
            later = [(q + 1, *rest) for q, *rest in tampered[i:]]
            tampered = [*tampered[:i], (p, "f" * 32, 1, t, b"forged"), *later]  # type: ignore[list-item]
    assert verify_log(tampered, seals).broken is not None


@given(logs, st.integers(min_value=1))
def test_removing_newest_writes_with_their_seals_fails_against_the_noted_head(
    case: tuple[list[int], list[int], list[bytes]], keep: int
) -> None:
    entries, seals = build(*case)
    head = LogHead(seals[-1].position, seals[-1].digest)
    kept_seals = seals[: keep % len(seals)]
    upto = kept_seals[-1].position if kept_seals else 0
    kept = [e for e in entries if e[0] <= upto]
    assert verify_log(kept, kept_seals).broken is None
    assert verify_log(kept, kept_seals, head).broken is not None
    assert verify_log(entries, seals, head).broken is None
