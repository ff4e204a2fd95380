"""`okrstream audit verify` and `okrstream audit export --objective ID`.

Both read the event store itself (not the projections): an auditor checks the source of
truth. The scheme, its guarantees and its limits: events/hashing.py.

verify checks, and names the first finding (exit 1):
1. every stream as stored: each event's JSON names the stream, version and type its row is
   stored under, versions run 1, 2, 3…, and the hash chain holds over the stored JSON
   (before any upcasting);
2. the whole log against its seals: an event removed (a stream's newest, or a whole
   stream), changed, moved or inserted at or before the newest seal breaks a seal.
It then prints the head `POSITION:DIGEST` (the newest seal). Noted down or published, it is
checked later with `--expect-head POSITION:DIGEST`, which detects any change to the log up to
it even if all seals were rewritten or the newest events removed with their seals. Events
older than the store's first seal (written by a release before log seals) are reported as
"not anchored before position N"; events after the newest seal as not sealed yet.

Neither command creates a store: pointed at a data dir or database without one (a typo in
OKR_DATA_DIR, a removed file, a database okrstream never wrote), both say so and exit 1
rather than report an empty log as intact.

export prints an objective's events as stored, one per line: the stored JSON object in
canonical form (keys sorted, no whitespace, UTF-8), at the schema version it was written with
(never upcast), `hash` and `prev_hash` included. An auditor re-hashes a line by removing its
`hash` key and taking the sha256 of the rest in the same canonical form.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from uuid import UUID

import orjson

import events
from events.hashing import LogEntry, LogHead, LogReport, LogSeal, verify_log, verify_stored_stream
from services.eventstore import EventStore
from services.eventstore.existing import store_missing
from services.settings import load_settings

PAGE = 1000
LOG_START = -(2**63)  # positions start at 1; reading from the lowest integer shows any below


def _open_existing() -> EventStore | None:
    """The event store the settings name, or None (after saying why) when there is none."""
    settings = load_settings()
    missing = store_missing(settings)
    if missing is not None:
        print(f"okrstream audit: {missing}", file=sys.stderr)
        return None
    return EventStore.from_settings(settings)


def _stream_ids(store: EventStore) -> Iterator[UUID]:
    after: UUID | None = None
    while True:
        page = store.stream_ids(after=after, limit=PAGE)
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1]


def check_stream(store: EventStore, stream_id: UUID) -> str | None:
    """None when the stream holds as stored, else a description of its first broken link."""
    stored = store.recorder.select_events(stream_id)
    rows = [(s.originator_version, s.topic, bytes(s.state)) for s in stored]
    broken = verify_stored_stream(stream_id, rows)
    if broken is not None:
        return str(broken)
    for s in stored:
        try:
            events.decode(s.state)
        except events.EventDecodeError as exc:
            return (
                f"stream {stream_id} version {s.originator_version}: "
                f"the stored event does not decode ({str(exc)[:200]})"
            )
    return None


def _log_entries(store: EventStore) -> Iterator[LogEntry]:
    after = LOG_START
    while True:
        page = store.notifications(after, PAGE)
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1].position


def _log_seals(store: EventStore, upto: LogSeal | None) -> Iterator[LogSeal]:
    """The seals up to `upto`, in order (seals added during the walk are left out)."""
    if upto is None:
        return
    after = LOG_START
    while True:
        page = store.log_seals(after, PAGE)
        for seal in page:
            if seal.position > upto.position:
                return
            yield seal
        if len(page) < PAGE:
            return
        after = page[-1].position


def check_log(store: EventStore, expect: LogHead | None = None) -> LogReport:
    """The whole log against its seals (and against `expect`, a head noted earlier)."""
    # The newest seal first: every entry it covers has committed, so the walk below reads
    # them all, however many writes commit meanwhile.
    newest = store.newest_log_seal()
    return verify_log(_log_entries(store), _log_seals(store, newest), expect)


@dataclass(frozen=True, slots=True)
class Audit:
    """What verify_store found: `broken` is None when everything holds."""

    streams: int  # streams checked
    log: LogReport | None  # None when a stream broke first
    broken: str | None


def verify_store(store: EventStore, expect: LogHead | None = None) -> Audit:
    """Every stream as stored, then the whole log against its seals; the first finding."""
    checked = 0
    for stream_id in _stream_ids(store):
        checked += 1
        broken = check_stream(store, stream_id)
        if broken is not None:
            return Audit(checked, None, broken)
    log = check_log(store, expect)
    return Audit(checked, log, log.broken)


def describe_log(log: LogReport, expect: LogHead | None) -> list[str]:
    """What an intact log's report tells an auditor, line by line."""
    if log.head is None and log.entries == 0:
        return ["the log is empty: no events yet, nothing to anchor"]
    if log.head is None:
        return [
            f"the log has no seals (a store written before log seals): {log.entries} events "
            f"not anchored before position {log.last_position + 1}; only their stream chains "
            "are checked"
        ]
    sealed = log.entries - log.unanchored - log.unsealed
    lines = [
        f"log: {sealed} events verified against {log.seals} seals; "
        f"head {log.head.position}:{log.head.digest}",
        "note the head down: `audit verify --expect-head POSITION:DIGEST` later detects any "
        "change to the log up to it",
    ]
    if log.base:
        lines.append(
            f"not anchored before position {log.base + 1}: {log.unanchored} events predate "
            "the log seals (only their stream chains are checked)"
        )
    if log.unsealed:
        lines.append(
            f"{log.unsealed} events after position {log.head.position} are not sealed yet "
            "(an append in flight, or a writer that does not seal)"
        )
    if expect is not None:
        lines.append(f"expected head {expect.position} holds")
    return lines


def verify(expect_head: str | None = None) -> int:
    """Exit status 0 when every stream and the log's seals hold (and the expected head
    `POSITION:DIGEST`, if given); 1 naming the first finding; 2 for a malformed head."""
    expect = None
    if expect_head is not None:
        try:
            expect = LogHead.parse(expect_head)
        except ValueError as exc:
            print(f"okrstream audit: {exc}", file=sys.stderr)
            return 2
    store = _open_existing()
    if store is None:
        return 1
    try:
        audit = verify_store(store, expect)
    finally:
        store.close()
    if audit.broken is not None:
        print(f"okrstream audit: BROKEN {audit.broken}", file=sys.stderr)
        return 1
    print(f"okrstream audit: {audit.streams} streams verified, every hash chain holds")
    assert audit.log is not None
    for line in describe_log(audit.log, expect):
        print(f"okrstream audit: {line}")
    return 0


def export(objective_id: str) -> int:
    """Print the objective's events in order as stored, one canonical JSON object per line."""
    try:
        stream_id = UUID(objective_id)
    except ValueError:
        print(f"okrstream audit: {objective_id!r} is not an objective id", file=sys.stderr)
        return 1
    store = _open_existing()
    if store is None:
        return 1
    try:
        stored = store.recorder.select_events(stream_id)
    finally:
        store.close()
    try:
        first = events.decode(stored[0].state) if stored else None
    except events.EventDecodeError:
        first = None
    if not isinstance(first, events.ObjectiveDrafted):
        print(f"okrstream audit: no objective {objective_id} (404)", file=sys.stderr)
        return 1
    lines: list[str] = []
    for s in stored:
        try:
            lines.append(orjson.dumps(orjson.loads(s.state), option=orjson.OPT_SORT_KEYS).decode())
        except orjson.JSONDecodeError:
            print(
                f"okrstream audit: version {s.originator_version} of {objective_id} is not "
                "JSON as stored: run `okrstream audit verify`",
                file=sys.stderr,
            )
            return 1
    sys.stdout.write("".join(line + "\n" for line in lines))
    sys.stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m services.audit.main verify [--expect-head P:D] | export --objective ID`."""
    parser = argparse.ArgumentParser(prog="okrstream audit", description="tamper evidence")
    sub = parser.add_subparsers(dest="action", required=True)
    check = sub.add_parser("verify", help="check every stream's hash chain and the log's seals")
    check.add_argument(
        "--expect-head", metavar="POSITION:DIGEST", help="a head printed by an earlier verify"
    )
    dump = sub.add_parser("export", help="an objective's full history as stored, JSON lines")
    dump.add_argument("--objective", required=True, help="objective id")
    args = parser.parse_args(argv)
    if args.action == "verify":
        return verify(args.expect_head)
    return export(args.objective)


if __name__ == "__main__":
    sys.exit(main())
