"""GET /v1/stream over a real uvicorn server: delivery, tenancy, heartbeats."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import pytest

from services.query.live import feed_of
from tests.integration.query.conftest import World

pytestmark = pytest.mark.integration


def _collect(url: str, headers: dict[str, str], out: list[str], stop: threading.Event) -> None:
    with httpx.Client(timeout=10) as client, client.stream("GET", url, headers=headers) as r:
        out.append(f"status {r.status_code} {r.headers.get('content-type')}")
        for line in r.iter_lines():
            out.append(line)
            if stop.is_set():
                return


def test_stream_delivers_own_org_changes_with_heartbeats(world: World, served: str) -> None:
    mine: list[str] = []
    theirs: list[str] = []
    stop = threading.Event()
    readers = [
        threading.Thread(
            target=_collect,
            args=(f"{served}/v1/stream", {"Authorization": f"Bearer {world.token}"}, mine, stop),
            daemon=True,
        ),
        threading.Thread(
            # EventSource style: the token as a query parameter.
            target=_collect,
            args=(f"{served}/v1/stream?access_token={world.other}", {}, theirs, stop),
            daemon=True,
        ),
    ]
    for t in readers:
        t.start()
    deadline = time.monotonic() + 10
    while not (any(": connected" in x for x in mine) and any(": connected" in x for x in theirs)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)  # the feed has taken its starting point
    world.seeder.change(
        "acme", "objective.updated", world.company, {"id": world.company, "score": 0.7}
    )
    world.seeder.change("globex", "objective.updated", world.foreign, {"id": world.foreign})
    world.seeder.change(
        "acme", "detection.raised", world.detections[0], {"id": world.detections[0]}
    )
    deadline = time.monotonic() + 10
    while not any("detection.raised" in x for x in mine) or not any(
        "objective.updated" in x for x in theirs
    ):
        assert time.monotonic() < deadline, (mine, theirs)
        time.sleep(0.05)
    time.sleep(0.8)  # long enough for a heartbeat
    stop.set()
    text = "\n".join(mine)
    assert mine[0].startswith("status 200 text/event-stream")
    assert "event: objective.updated" in text
    assert world.company in text
    assert world.foreign not in text
    assert ": heartbeat" in text
    assert world.company not in "\n".join(theirs)
    assert world.foreign in "\n".join(theirs)


def _wait(condition: Callable[[], bool], what: object) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_subscriber_after_everyone_left_starts_at_the_head(world: World, served: str) -> None:
    """What changed while nobody listened is not replayed to the next subscriber as live."""
    url, auth = f"{served}/v1/stream", {"Authorization": f"Bearer {world.token}"}
    feed = feed_of(world.client.app)  # type: ignore[arg-type]
    first: list[str] = []
    stop = threading.Event()
    reader = threading.Thread(target=_collect, args=(url, auth, first, stop), daemon=True)
    reader.start()
    _wait(lambda: any(": connected" in x for x in first), first)
    time.sleep(0.3)  # the feed has taken its starting point
    world.seeder.change("acme", "objective.updated", world.company, {"id": world.company})
    _wait(lambda: any("objective.updated" in x for x in first), first)
    stop.set()  # the reader leaves at the next heartbeat
    reader.join(10)
    _wait(lambda: not feed.subscribers and not feed.polling, "the poller stops")
    world.seeder.change(
        "acme", "detection.raised", world.detections[0], {"id": world.detections[0]}
    )
    second: list[str] = []
    stop = threading.Event()
    threading.Thread(target=_collect, args=(url, auth, second, stop), daemon=True).start()
    _wait(lambda: any(": connected" in x for x in second), second)
    time.sleep(0.3)
    world.seeder.change("acme", "kpi.updated", world.kpi, {"id": world.kpi})
    _wait(lambda: any("kpi.updated" in x for x in second), second)
    time.sleep(0.3)  # anything else pending has come too
    stop.set()
    assert not any("detection.raised" in x for x in second), second


def test_stream_needs_a_read_token(world: World, served: str) -> None:
    assert httpx.get(f"{served}/v1/stream").status_code == 401
    assert httpx.get(f"{served}/v1/stream?access_token=okr_bad").status_code == 401
    r = httpx.get(f"{served}/v1/stream", headers={"Authorization": f"Bearer {world.writer_only}"})
    assert r.status_code == 403
