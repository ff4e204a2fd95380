"""The dashboard in a real headless Chromium against `okrstream up`.

Chromium is Debian's package (installed with apt-get when missing); the test drives it over
the DevTools protocol (websockets' sync client), no browser download.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.support.ports import free_port
from tests.support.stack import Stack

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
INJECTION = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed when missing."""
    if not Path(CHROMIUM).exists():
        env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env, timeout=1200
        )
    assert Path(CHROMIUM).exists() or shutil.which("chromium")
    return CHROMIUM


class Page:
    """One tab over the Chrome DevTools protocol."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=30))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(message["error"])
                return dict(message.get("result", {}))

    def eval(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout_s: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.eval(expression)
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(
            f"timed out waiting for {expression}: {self.eval('document.body.innerText')}"
        )


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    process = subprocess.Popen(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
            f"--remote-debugging-port={port}", "--window-size=1400,1000", "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield port, process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def open_page(port: int) -> Page:
    deadline = time.monotonic() + 30
    while True:
        try:
            targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=2).json()
            page = next(t for t in targets if t["type"] == "page")
            break
        except (httpx.HTTPError, StopIteration):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10, legacy=True)
    return Page(ws)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with Stack(tmp_path / "stack") as running:
        yield running


def _post(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(path, json=body)
    assert r.status_code in (200, 201, 202), r.text
    return dict(r.json())


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def test_dashboard_shows_objectives_and_updates_live(stack: Stack, browser: Any) -> None:
    port, _process = browser
    token = stack.dev_token()
    api = httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    kpi = _post(api, "/v1/kpis", {
        "name": "Demo signups", "direction": "increase", "target": 100, "interval": "month",
        "aggregation": "sum",
    })["id"]  # fmt: skip
    oid = _post(api, "/v1/objectives", {
        "title": f"Grow signups {INJECTION}", "owner": "ana", "level": "company",
        "period": {"start": "2026-01-01", "end": "2027-12-31"},
    })["id"]  # fmt: skip
    kr = {"title": "Signups", "kind": "metric", "start": 0, "target": 100, "kpi_id": kpi}
    _post(api, f"/v1/objectives/{oid}/key-results", kr)
    position = _post(api, "/v1/readings", {"readings": [
        {"kpi_id": kpi, "value": 30, "observed_at": _now()}
    ]})["position"]  # fmt: skip
    view = api.get(f"/v1/objectives/{oid}", params={"min_position": position}).json()
    assert view["score"] == pytest.approx(0.3)

    page = open_page(port)
    page.send("Page.enable")
    page.send("Page.navigate", url=f"{stack.url}/")
    page.wait_for("document.readyState === 'complete' && !!document.getElementById('login')")
    page.wait_for("!document.getElementById('login').hidden")
    page.eval(
        f"document.getElementById('token').value = {json.dumps(token)};"
        "document.getElementById('login').requestSubmit(); true"
    )
    score = f"document.querySelector('[data-objective-id=\"{oid}\"] .score')"
    assert page.wait_for(f"{score} && {score}.textContent") == "30%"
    title = page.eval(f"document.querySelector('[data-objective-id=\"{oid}\"] .title').textContent")
    assert INJECTION in title  # rendered as text
    assert page.eval("window.__xss === undefined") is True
    page.wait_for("document.getElementById('live').textContent === 'live'")
    page.wait_for(f"!!document.querySelector('[data-kpi-id=\"{kpi}\"]')")
    page.wait_for("document.querySelectorAll('#history-chart svg polyline').length > 0")

    # A new reading: the page updates from the SSE stream (its periodic refresh is 60 s).
    _post(api, "/v1/readings", {"readings": [
        {"kpi_id": kpi, "value": 20, "observed_at": _now()}
    ]})  # fmt: skip
    assert page.wait_for(f"{score}.textContent === '50%' && {score}.textContent", 20) == "50%"
    page.wait_for("document.getElementById('detail-meta').textContent.includes('score 50%')")
    assert page.eval("document.getElementById('login').offsetParent === null") is True
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = page.send("Page.captureScreenshot", format="png")
    import base64

    (ARTIFACTS / "dashboard.png").write_bytes(base64.b64decode(shot["data"]))
    page.ws.close()
    api.close()


# Installed before app.js runs: counts the live intervals, runs each at most every 300 ms
# (so the 60 s refresh shows within the test) and notes every Authorization sent.
TIMER_SPY = """
window.__intervals = new Set();
window.__auth = [];
const setInterval0 = window.setInterval, clearInterval0 = window.clearInterval;
window.setInterval = (f, ms, ...args) => {
  const id = setInterval0(f, Math.min(ms, 300), ...args);
  window.__intervals.add(id);
  return id;
};
window.clearInterval = (id) => { window.__intervals.delete(id); clearInterval0(id); };
const fetch0 = window.fetch;
window.fetch = (path, options) => {
  window.__auth.push(options && options.headers ? options.headers.Authorization : null);
  return fetch0(path, options);
};
"""


def _sign_in(page: Page, token: str) -> None:
    page.wait_for("!document.getElementById('login').hidden")
    page.eval(
        f"document.getElementById('token').value = {json.dumps(token)};"
        "document.getElementById('login').requestSubmit(); true"
    )
    page.wait_for("document.getElementById('live').textContent === 'live'")


def test_sign_out_stops_the_periodic_refresh(stack: Stack, browser: Any) -> None:
    """No refresh runs without a token after "forget token" (it used to send "Bearer null"
    and show "That token was not accepted."), and signing in again starts one, not two."""
    port, _process = browser
    page = open_page(port)
    page.send("Page.enable")
    page.send("Page.addScriptToEvaluateOnNewDocument", source=TIMER_SPY)
    page.send("Page.navigate", url=f"{stack.url}/")
    page.wait_for("document.readyState === 'complete' && !!document.getElementById('login')")
    token = stack.dev_token()
    _sign_in(page, token)
    assert page.eval("window.__intervals.size") == 1
    page.wait_for("window.__auth.length >= 8")  # the refresh has run a few times
    page.eval("document.getElementById('signout').click(); true")
    time.sleep(1.5)  # several periods of the (shortened) refresh interval
    assert page.eval("document.getElementById('login-error').textContent") == ""
    assert page.eval("window.__intervals.size") == 0
    bearer = json.dumps(f"Bearer {token}")
    assert page.eval(f"window.__auth.filter((a) => a !== {bearer})") == []
    _sign_in(page, token)
    assert page.eval("window.__intervals.size") == 1
    page.ws.close()


SMALL_PAGES = """
const fetch1 = window.fetch;
window.fetch = (path, options) => fetch1(String(path).replace("limit=1000", "limit=2"), options);
"""


def test_history_chart_runs_forward_in_time(stack: Stack, browser: Any) -> None:
    """A check-in imported as of ten days ago comes after today's in the history (processing
    order): the chart still draws its points left to right, by occurred_at, every one: also
    when the history takes several pages (here of 2 rows; the chart drew the first page
    only, the oldest rows of a busy objective). Signing out leaves none of it on the page."""
    port, _process = browser
    token = stack.dev_token()
    api = httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    now = datetime.now(UTC)
    ago = lambda days: (now - timedelta(days=days)).isoformat()  # noqa: E731
    oid = _post(api, "/v1/objectives", {
        "title": "Ship it", "owner": "ana", "level": "company", "occurred_at": ago(30),
        "period": {"start": ago(40)[:10], "end": (now + timedelta(days=40)).date().isoformat()},
    })["id"]  # fmt: skip
    metric, milestone = (
        _post(api, f"/v1/objectives/{oid}/key-results", {"occurred_at": ago(30), **kr})["id"]
        for kr in (
            {"title": "Users", "kind": "metric", "start": 0, "target": 100},
            {"title": "Launch", "kind": "milestone"},
        )
    )
    _post(api, f"/v1/objectives/{oid}/key-results/{metric}/check-ins", {"value": 80})
    # The launch, imported: done ten days ago (each check-in moves the score: a history row).
    position = _post(api, f"/v1/objectives/{oid}/key-results/{milestone}/check-ins", {
        "done": True, "occurred_at": ago(10),
    })["position"]  # fmt: skip
    history = api.get(f"/v1/objectives/{oid}/history", params={"min_position": position}).json()[
        "items"
    ]
    times = [item["occurred_at"] for item in history]
    assert times[-1] < times[-2]  # the import comes last

    assert len(history) > 2, "more than one page"
    page = open_page(port)
    page.send("Page.enable")
    page.send("Page.addScriptToEvaluateOnNewDocument", source=SMALL_PAGES)
    page.send("Page.navigate", url=f"{stack.url}/")
    page.wait_for("document.readyState === 'complete' && !!document.getElementById('login')")
    _sign_in(page, token)
    points = page.wait_for(
        "(document.querySelector('#history-chart svg polyline') || {}).getAttribute"
        " && document.querySelector('#history-chart svg polyline').getAttribute('points')"
    )
    xs = [float(point.split(",")[0]) for point in points.split()]
    assert len(xs) == 2 * len(history)  # each point and the step to it, and the line to now
    assert xs == sorted(xs)
    page.eval("document.getElementById('signout').click(); true")
    panels = "['tree', 'kpis', 'detections', 'history-chart', 'krs', 'detail-meta']"
    assert page.eval(f"{panels}.map((id) => document.getElementById(id).textContent)") == [""] * 6
    assert page.eval("document.getElementById('history-chart').childElementCount") == 0
    assert page.eval("document.getElementById('detail-title').textContent") == "Score history"
    page.ws.close()
    api.close()
