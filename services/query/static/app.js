// okrstream dashboard: plain JS, no build step. All user text goes through textContent,
// never innerHTML, so titles like "<script>" render as text.
"use strict";

const TOKEN_KEY = "okrstream.token";
const SVG = "http://www.w3.org/2000/svg";
// refreshInterval / refreshTimer: the periodic refresh and the pending coalesced one; both
// are cleared on sign-out, so no request goes out without a token.
const state = {
  token: null, selected: null, objectives: new Map(), kpis: new Set(), source: null,
  refreshInterval: null, refreshTimer: null,
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

const pct = (x) => (x === null || x === undefined ? "–" : `${Math.round(x * 100)}%`);
const num = (x) => (x === null || x === undefined ? "–" : Number(x).toLocaleString(undefined, { maximumFractionDigits: 2 }));

async function api(path) {
  // A refresh still running at sign-out must not send "Bearer null" (and earn a 401).
  if (!state.token) throw new Error("signed out");
  const r = await fetch(path, { headers: { Authorization: `Bearer ${state.token}` } });
  if (r.status === 401) { signOut("That token was not accepted."); throw new Error("401"); }
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  const position = r.headers.get("X-Projection-Position");
  if (position) document.getElementById("position").textContent = `position ${position}`;
  return r.json();
}

// Every page of a list (following next_cursor), at most `cap` items: a busy objective's
// history or a daily KPI's series runs past one page, and the newest items come last.
async function allPages(path, cap = 20000) {
  const items = [];
  let cursor = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api(cursor ? `${path}${sep}cursor=${encodeURIComponent(cursor)}` : path);
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < cap);
  return items;
}

// -- objectives tree --------------------------------------------------------------------

function renderNode(view) {
  state.objectives.set(view.id, view);
  for (const kr of view.key_results || []) if (kr.kpi_id) state.kpis.add(kr.kpi_id);
  const row = el("div", { class: "node", "data-objective-id": view.id },
    el("span", { class: "title" }, view.title),
    el("span", { class: `badge ${view.status}` }, view.status.replace("_", " ")),
    el("span", { class: "score", title: "score (rollup " + pct(view.rollup_score) + ")" }, pct(view.score)));
  if (view.id === state.selected) row.classList.add("selected");
  row.addEventListener("click", () => select(view.id));
  const item = el("li", {}, row);
  if (view.children && view.children.length) {
    item.append(el("ul", {}, ...view.children.map(renderNode)));
  }
  return item;
}

async function loadTree() {
  const tree = await api("/v1/objectives/tree");
  state.objectives.clear();
  state.kpis.clear(); // the KPIs the tree's key results measure now (renderNode adds them)
  const list = document.getElementById("tree");
  list.replaceChildren(...tree.items.map(renderNode));
  if (!tree.items.length) list.append(el("li", { class: "muted" }, "No objectives yet."));
  if (!state.selected || !state.objectives.has(state.selected)) {
    state.selected = tree.items.length ? tree.items[0].id : null;
  }
  for (const n of list.querySelectorAll(".node")) {
    n.classList.toggle("selected", n.getAttribute("data-objective-id") === state.selected);
  }
}

// -- score history chart ----------------------------------------------------------------

function byTime(items, timeOf) {
  return items.map((item) => [Date.parse(timeOf(item)), item])
    .sort((a, b) => a[0] - b[0]).map(([, item]) => item);
}

function historyChart(points, view) {
  const w = 600, h = 160, pad = 24;
  const root = svg("svg", { viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": "score history" });
  const start = Date.parse(view.period.start + "T00:00:00Z");
  const end = Date.parse(view.period.end + "T00:00:00Z") + 86400000;
  const x = (t) => pad + ((t - start) / (end - start)) * (w - 2 * pad);
  const y = (s) => h - pad - Math.min(1.2, Math.max(0, s)) / 1.2 * (h - 2 * pad);
  root.append(svg("line", { x1: x(start), y1: y(0), x2: x(end), y2: y(1), class: "expected line" }));
  for (const s of [0, 0.5, 1]) {
    const t = svg("text", { x: 2, y: y(s) + 3 });
    t.textContent = pct(s);
    root.append(t);
  }
  const coords = [];
  let last = null;
  // By time, not by array order: history comes in processing order, and a backdated
  // check-in would draw the line backwards (the sort is stable for equal times).
  for (const p of byTime(points, (q) => q.occurred_at)) {
    const t = Date.parse(p.occurred_at);
    if (last !== null) coords.push(`${x(t)},${y(last)}`);
    coords.push(`${x(t)},${y(p.score)}`);
    last = p.score;
  }
  if (last !== null) coords.push(`${x(Math.min(Date.now(), end))},${y(last)}`);
  root.append(svg("polyline", { points: coords.join(" "), class: "line" }));
  return root;
}

async function select(id) {
  state.selected = id;
  for (const n of document.querySelectorAll(".node")) {
    n.classList.toggle("selected", n.getAttribute("data-objective-id") === id);
  }
  await loadDetail();
}

function clearDetail() {
  document.getElementById("detail-title").textContent = "Score history";
  document.getElementById("detail-meta").textContent = "";
  document.getElementById("history-chart").replaceChildren();
  document.getElementById("krs").replaceChildren();
}

async function loadDetail() {
  const id = state.selected;
  const title = document.getElementById("detail-title");
  const chart = document.getElementById("history-chart");
  const krs = document.getElementById("krs");
  if (!id) { clearDetail(); return; }
  const [view, history] = await Promise.all([
    api(`/v1/objectives/${id}`), allPages(`/v1/objectives/${id}/history?limit=1000`),
  ]);
  title.textContent = view.title;
  document.getElementById("detail-meta").textContent =
    `${view.owner} · ${view.level} · ${view.period.start} → ${view.period.end} · score ${pct(view.score)}` +
    ` · expected ${pct(view.expected)} · forecast ${pct(view.forecast)} · zone ${view.zone}`;
  chart.replaceChildren(historyChart(history, view));
  krs.replaceChildren(el("tr", {}, el("th", {}, "Key result"), el("th", {}, "current"), el("th", {}, "target"), el("th", {}, "score")),
    ...view.key_results.map((kr) => el("tr", {}, el("td", {}, kr.title), el("td", {}, num(kr.current)),
      el("td", {}, num(kr.target)), el("td", {}, pct(kr.score)))));
}

// -- KPIs with sparklines ---------------------------------------------------------------

function sparkline(items) {
  const w = 120, h = 28;
  const root = svg("svg", { viewBox: `0 0 ${w} ${h}`, class: "spark" });
  const values = byTime(items, (b) => b.bucket_start).map((b) => b.value).filter((v) => v !== null);
  if (values.length < 1) return root;
  const lo = Math.min(...values), hi = Math.max(...values);
  if (values.length === 1) values.push(values[0]); // one bucket: a flat line
  const pts = values.map((v, i) => {
    const px = values.length === 1 ? w / 2 : (i / (values.length - 1)) * (w - 4) + 2;
    const py = hi === lo ? h / 2 : h - 2 - ((v - lo) / (hi - lo)) * (h - 4);
    return `${px},${py}`;
  });
  root.append(svg("polyline", { points: pts.join(" ") }));
  return root;
}

async function loadKpis() {
  const list = document.getElementById("kpis");
  const rows = await Promise.all([...state.kpis].map(async (id) => {
    try {
      const kpi = await api(`/v1/kpis/${id}`);
      // The sparkline's 30 buckets, not the KPI's whole history at every refresh.
      const span = { day: 1, week: 7, month: 31 }[kpi.interval] * 31 * 86400000;
      const from = encodeURIComponent(new Date(Date.now() - span).toISOString());
      const series = await allPages(`/v1/kpis/${id}/series?limit=1000&from=${from}`);
      return el("li", { "data-kpi-id": id },
        el("span", { class: "name" }, kpi.name),
        sparkline(byTime(series, (b) => b.bucket_start).slice(-30)),
        el("span", { class: "value" }, `${num(kpi.current)}${kpi.unit ? " " + kpi.unit : ""}`),
        el("span", { class: `badge ${kpi.status}` }, kpi.stale ? `${kpi.status} · stale` : kpi.status));
    } catch (e) { return null; }
  }));
  const shown = rows.filter(Boolean);
  list.replaceChildren(...shown);
  if (!shown.length) list.append(el("li", { class: "muted" }, "No KPIs linked to key results."));
}

// -- detections feed --------------------------------------------------------------------

async function loadDetections() {
  const found = await api("/v1/detections?limit=50");
  const list = document.getElementById("detections");
  list.replaceChildren(...found.items.map((d) => {
    const subject = state.objectives.get(d.subject_id);
    return el("li", { class: d.resolved_at ? "resolved" : "", "data-detection-id": d.id },
      el("span", { class: `badge ${d.kind === "under_reach" ? "amber" : d.kind === "stale_kpi" ? "no_data" : "red"}` }, d.kind.replace("_", " ")),
      el("span", {}, d.reason.replaceAll("_", " ")),
      el("span", { class: "name" }, subject ? subject.title : `${d.subject_type} ${d.subject_id.slice(0, 8)}`),
      el("span", { class: "muted" }, d.resolved_at ? `resolved ${d.resolved_at.slice(0, 10)}` : d.detected_at.slice(0, 10)));
  }));
  if (!found.items.length) list.append(el("li", { class: "muted" }, "No detections."));
}

// -- refresh and live updates -----------------------------------------------------------

let refreshing = false;
async function refresh() {
  if (!state.token) return;
  if (refreshing) { scheduleRefresh(); return; }
  refreshing = true;
  try {
    await loadTree();
    await Promise.all([loadDetail(), loadKpis(), loadDetections()]);
  } catch (e) {
    console.warn("refresh failed", e);
  } finally {
    refreshing = false;
  }
}

function scheduleRefresh() {
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(refresh, 250); // coalesce bursts of events into one refresh
}

function stopRefreshing() {
  clearInterval(state.refreshInterval);
  clearTimeout(state.refreshTimer);
  state.refreshInterval = null;
  state.refreshTimer = null;
}

function connect() {
  if (state.source) state.source.close();
  // EventSource cannot send headers: the stream accepts ?access_token= (this route only).
  const source = new EventSource(`/v1/stream?access_token=${encodeURIComponent(state.token)}`);
  const live = document.getElementById("live");
  source.onopen = () => { live.textContent = "live"; live.className = "live on"; };
  source.onerror = () => { live.textContent = "reconnecting"; live.className = "live off"; };
  // stream.reset: the stream could not resume exactly (a replay, say): reload everything.
  for (const kind of ["objective.updated", "kpi.updated", "detection.raised", "detection.resolved",
                      "stream.reset"]) {
    source.addEventListener(kind, scheduleRefresh);
  }
  state.source = source;
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  stopRefreshing();
  if (state.source) state.source.close();
  state.source = null;
  // Nothing of this organisation stays on the page for the next token (maybe another's).
  state.selected = null;
  state.objectives.clear();
  state.kpis.clear();
  for (const id of ["tree", "kpis", "detections"]) document.getElementById(id).replaceChildren();
  document.getElementById("position").textContent = "";
  clearDetail();
  document.getElementById("app").hidden = true;
  document.getElementById("signout").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
}

function start(token) {
  state.token = token;
  document.getElementById("login").hidden = true;
  document.getElementById("app").hidden = false;
  document.getElementById("signout").hidden = false;
  stopRefreshing(); // one periodic refresh, however often the user signs in
  refresh();
  connect();
  // Time passes: pace numbers move even without events.
  state.refreshInterval = setInterval(refresh, 60000);
}

document.getElementById("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const token = document.getElementById("token").value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  start(token);
});
document.getElementById("signout").addEventListener("click", () => signOut(""));

const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) start(saved); else signOut("");
