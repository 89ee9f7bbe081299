// Live dashboard: REST for history, the /ws feed for everything after.
// No libraries: sparklines and the OHLC chart are drawn on <canvas>.
//
// Built for a whole market (10,000 symbols, ~10,000 bar versions/s): a
// message only updates the in-memory state and marks its symbol dirty; the
// page is redrawn at most every RENDER_MS, and only the rows on screen (the
// first PAGE_ROWS symbols matching the search) and the top movers are drawn.
// History (sparklines, chart) is fetched for the rows on screen only.
//
// A dropped socket loses nothing: the page keeps its resume point per channel
// (the highest Kafka offset seen per partition, DESIGN.md §8) and reconnects
// with `after`, so the server replays every bar version and alert of the gap.
"use strict";

const HISTORY_BARS = 60;       // bars fetched per symbol for sparklines and the chart
const MAX_ALERTS = 200;
const PAGE_ROWS = 50;          // table rows drawn at once; the search box reaches any other symbol
const MOVERS = 10;             // rows of each top-movers list
const RENDER_MS = 500;         // at most two redraws a second, whatever the feed's rate
const CHANNELS = ["trends", "alerts"];
const state = {
  latest: new Map(),           // symbol -> latest bar (newest window, latest version)
  symbols: [],                 // every symbol, sorted
  history: new Map(),          // symbol -> Map(window_start -> bar), for symbols on screen or selected
  historyLoading: new Set(),
  dirty: new Set(),            // symbols changed since the last render
  viewStale: true,             // the set of rows on screen must be recomputed (search, new symbols)
  moversStale: true,
  visible: [],                 // symbols of the rows on screen, in order
  matches: 0,                  // symbols matching the search
  query: "",
  selected: null,
  interval: "1m",              // the chart's bar length; other than the window: rolled up by the server
  rolled: null,                // {symbol, interval, bars} of the chart when interval is not the window
  window: "1m",
  alerts: [],
  alertIds: new Set(),
  alertsDirty: false,
  ws: null,
  // channel -> {"<partition>": highest offset seen}: where a reconnect resumes. null until the channel's
  // first snapshot (then a reconnect subscribes plainly and gets a snapshot again).
  positions: { trends: null, alerts: null },
  replayed: 0,                 // messages the server replayed after reconnects (missed while disconnected)
  retryMs: 500,
  lastMessage: 0,
  heartbeatS: 15,
};

const $ = (sel) => document.querySelector(sel);
const fmt = (v, d = 2) => (v === null || v === undefined || Number.isNaN(v)) ? "–" : Number(v).toFixed(d);
const fmtVol = (v) => v >= 1e6 ? (v / 1e6).toFixed(2) + "M" : v >= 1e3 ? (v / 1e3).toFixed(1) + "k" : fmt(v, 0);
const fmtPct = (v) => (v > 0 ? "+" : "") + fmt(v) + "%";
const hhmm = (ms) => new Date(ms).toISOString().slice(11, 16);
const signClass = (v) => v > 0 ? "up" : v < 0 ? "down" : "flat";

// DESIGN.md §4: (symbol, window_start) is a bar's identity; a version is newer by
// pane_index, then the final one, then the one with more ticks.
function newer(a, b) {
  if (a.pane_index !== b.pane_index) return a.pane_index > b.pane_index;
  if (Boolean(a.is_final) !== Boolean(b.is_final)) return Boolean(a.is_final);
  return a.tick_count > b.tick_count;
}

// --- state -------------------------------------------------------------------
function insertSymbol(symbol) {
  let lo = 0, hi = state.symbols.length;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (state.symbols[mid] < symbol) lo = mid + 1; else hi = mid; }
  state.symbols.splice(lo, 0, symbol);
}

function upsertBar(bar) {
  const symbol = bar.symbol;
  let changed = false;
  const current = state.latest.get(symbol);
  if (!current) {
    state.latest.set(symbol, bar);
    insertSymbol(symbol);
    state.viewStale = true;
    changed = true;
  } else if (bar.window_start > current.window_start ||
             (bar.window_start === current.window_start && newer(bar, current))) {
    state.latest.set(symbol, bar);
    changed = true;
  }
  const windows = state.history.get(symbol);
  if (windows) {
    const kept = windows.get(bar.window_start);
    if (!kept || newer(bar, kept)) {
      windows.set(bar.window_start, bar);
      if (windows.size > HISTORY_BARS * 2) windows.delete(Math.min(...windows.keys()));
      changed = true;
    }
  }
  if (changed) { state.dirty.add(symbol); state.moversStale = true; }
  return changed;
}

// The chart's bars: the window's own (live) or the server's rollup, whose newest interval the feed extends.
function chartBars() {
  if (!state.selected) return [];
  if (state.interval === state.window) return sortedBars(state.selected);
  const r = state.rolled;
  return r && r.symbol === state.selected && r.interval === state.interval ? r.bars : [];
}

async function loadRollup() {
  const symbol = state.selected, interval = state.interval;
  if (!symbol || interval === state.window) return;
  try {
    const resp = await fetch(`/api/v1/trends/${encodeURIComponent(symbol)}?interval=${interval}&limit=${HISTORY_BARS}`);
    if (!resp.ok) return;
    const body = await resp.json();
    if (symbol === state.selected && interval === state.interval) {
      state.rolled = { symbol, interval, bars: body.trends };
      drawChart();
    }
  } catch (err) { /* next refresh */ }
}

// A live bar of the charted symbol extends the rollup's newest interval: ask again, at most every 2 s.
let rollupTimer = null;
function refreshRollupSoon() {
  if (rollupTimer !== null) return;
  rollupTimer = setTimeout(() => { rollupTimer = null; loadRollup(); }, 2000);
}

function sortedBars(symbol) {
  const windows = state.history.get(symbol);
  if (!windows) { const b = state.latest.get(symbol); return b ? [b] : []; }
  return [...windows.values()].sort((a, b) => a.window_start - b.window_start).slice(-HISTORY_BARS);
}

async function loadHistory(symbol) {
  if (state.history.has(symbol) || state.historyLoading.has(symbol)) return;
  state.historyLoading.add(symbol);
  try {
    const resp = await fetch(`/api/v1/trends/${encodeURIComponent(symbol)}?limit=${HISTORY_BARS}`);
    if (!resp.ok) return;
    const body = await resp.json();
    const windows = new Map();
    state.history.set(symbol, windows);
    const latest = state.latest.get(symbol);
    if (latest) windows.set(latest.window_start, latest);
    body.trends.forEach(upsertBar);
    state.dirty.add(symbol);
    scheduleRender();
  } catch (err) { /* the live feed still fills in */ } finally {
    state.historyLoading.delete(symbol);
  }
}

// Keep history only for what is on screen: 10,000 symbols' histories would not fit a tab.
function forgetHistory() {
  const keep = new Set(state.visible);
  if (state.selected) keep.add(state.selected);
  for (const symbol of state.history.keys()) if (!keep.has(symbol)) state.history.delete(symbol);
}

// --- rendering, throttled ---------------------------------------------------------
let renderTimer = null;
let lastRender = 0;
function scheduleRender() {
  if (renderTimer !== null) return;
  renderTimer = setTimeout(render, Math.max(0, RENDER_MS - (Date.now() - lastRender)));
}

function render() {
  renderTimer = null;
  lastRender = Date.now();
  if (state.viewStale) renderView();
  for (const symbol of state.dirty) {
    const row = rowOf(symbol);
    if (row) renderRow(row, symbol, true);
  }
  if (state.selected && state.dirty.has(state.selected)) {
    if (state.interval === state.window) drawChart(); else refreshRollupSoon();
  }
  state.dirty.clear();
  if (state.moversStale) renderMovers();
  if (state.alertsDirty) renderAlerts();
}

function matching() {
  const q = state.query;
  if (!q) return { list: state.symbols.slice(0, PAGE_ROWS), total: state.symbols.length };
  // Symbols starting with the query first (so "A" finds A before BA), then those containing it.
  const starts = [], contains = [];
  for (const s of state.symbols) {
    const at = s.indexOf(q);
    if (at === 0) starts.push(s); else if (at > 0) contains.push(s);
  }
  return { list: starts.concat(contains).slice(0, PAGE_ROWS), total: starts.length + contains.length };
}

function rowOf(symbol) {
  return $("#symbols tbody").querySelector(`tr[data-symbol="${CSS.escape(symbol)}"]`);
}

function renderView() {
  state.viewStale = false;
  const { list, total } = matching();
  state.visible = list;
  state.matches = total;
  const tbody = $("#symbols tbody");
  const existing = new Map([...tbody.querySelectorAll("tr[data-symbol]")].map((r) => [r.dataset.symbol, r]));
  const rows = list.map((symbol) => {
    let row = existing.get(symbol);
    if (row) { existing.delete(symbol); return row; }
    row = document.createElement("tr");
    row.dataset.symbol = symbol;
    row.innerHTML = `<td class="sym"></td><td class="num last"></td><td class="num change"></td>
      <td class="num swing"></td><td class="num vwap"></td><td class="num volume"></td><td class="trend"></td>
      <td><canvas class="spark" width="240" height="56"></canvas></td><td class="pane"></td>`;
    row.addEventListener("click", () => select(symbol));
    renderRow(row, symbol, false);
    return row;
  });
  if (!rows.length) {
    const empty = document.createElement("tr");
    empty.className = "empty";
    empty.innerHTML = `<td colspan="9">${state.symbols.length ? "No symbol matches." : "Waiting for bars…"}</td>`;
    rows.push(empty);
  }
  tbody.replaceChildren(...rows);
  const n = state.symbols.length;
  $("#symbol-count").textContent = state.query || n > list.length
    ? `(${list.length} of ${total} matching, ${n} in all)` : `(${n})`;
  list.forEach(loadHistory);
  if (!state.selected && list.length) select(list[0]);
  document.querySelectorAll("#symbols tr.selected").forEach((r) => r.classList.remove("selected"));
  if (state.selected) rowOf(state.selected)?.classList.add("selected");
  forgetHistory();
}

function renderRow(row, symbol, flash) {
  const bars = sortedBars(symbol);
  if (!bars.length) return;
  const bar = bars[bars.length - 1];
  row.querySelector(".sym").textContent = symbol;
  row.querySelector(".last").textContent = fmt(bar.close);
  const change = row.querySelector(".change");
  change.textContent = fmtPct(bar.change_pct);
  change.className = "num change " + signClass(bar.change_pct);
  const swing = row.querySelector(".swing");
  swing.textContent = fmt(bar.swing_pct) + "%";
  swing.className = "num swing " + (bar.is_volatility_anomaly ? "down" : "");
  row.querySelector(".vwap").textContent = fmt(bar.vwap);
  row.querySelector(".volume").textContent = fmtVol(bar.volume);
  const trend = row.querySelector(".trend");
  trend.textContent = { up: "▲ up", down: "▼ down", flat: "■ flat" }[bar.trend] || "–";
  trend.className = "trend " + (bar.trend === "up" ? "up" : bar.trend === "down" ? "down" : "flat");
  row.querySelector(".pane").textContent = `${hhmm(bar.window_start)} ${bar.pane}`;
  row.dataset.close = bar.close;
  row.dataset.bars = bars.length;
  drawSparkline(row.querySelector("canvas.spark"), bars);
  if (flash) { row.classList.remove("flash"); void row.offsetWidth; row.classList.add("flash"); }
}

function drawSparkline(canvas, bars) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 4;
  ctx.clearRect(0, 0, w, h);
  if (bars.length < 1) return;
  const closes = bars.map((b) => b.close);
  const lo = Math.min(...closes), hi = Math.max(...closes), span = hi - lo || 1;
  const x = (i) => pad + (bars.length === 1 ? (w - 2 * pad) / 2 : i * (w - 2 * pad) / (bars.length - 1));
  const y = (v) => h - pad - (v - lo) / span * (h - 2 * pad);
  ctx.lineWidth = 3;
  ctx.strokeStyle = closes[closes.length - 1] >= closes[0] ? "#3fb950" : "#f85149";
  ctx.beginPath();
  closes.forEach((v, i) => (i ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v))));
  ctx.stroke();
  canvas.dataset.points = closes.length;
}

// --- top movers -----------------------------------------------------------------
// The MOVERS largest by `key`, in one pass over the latest bars (no sort of 10,000).
function largest(key) {
  const best = [];
  for (const bar of state.latest.values()) {
    const v = key(bar);
    if (!Number.isFinite(v)) continue;
    if (best.length === MOVERS && v <= best[best.length - 1][0]) continue;
    let i = best.length;
    while (i > 0 && best[i - 1][0] < v) i--;
    best.splice(i, 0, [v, bar]);
    if (best.length > MOVERS) best.pop();
  }
  return best.map(([, bar]) => bar);
}

function renderMovers() {
  state.moversStale = false;
  const fill = (list, bars, value) => {
    list.replaceChildren(...bars.map((bar) => {
      const li = document.createElement("li");
      li.dataset.symbol = bar.symbol;
      li.innerHTML = `<span class="sym"></span><span class="num"></span>`;
      li.querySelector(".sym").textContent = bar.symbol;
      const num = li.querySelector(".num");
      value(num, bar);
      li.addEventListener("click", () => select(bar.symbol));
      return li;
    }));
  };
  fill($("#movers-change"), largest((b) => Math.abs(b.change_pct)), (el, b) => {
    el.textContent = fmtPct(b.change_pct); el.className = "num " + signClass(b.change_pct);
  });
  fill($("#movers-volume"), largest((b) => b.volume), (el, b) => { el.textContent = fmtVol(b.volume); });
}

// --- main chart --------------------------------------------------------------
function select(symbol) {
  state.selected = symbol;
  document.querySelectorAll("#symbols tr.selected").forEach((r) => r.classList.remove("selected"));
  rowOf(symbol)?.classList.add("selected");
  $("#chart-title").textContent = symbol;
  loadHistory(symbol);
  state.rolled = null;
  loadRollup();
  drawChart();
}

function setInterval_(interval) {
  state.interval = interval;
  document.querySelectorAll("#intervals button").forEach((b) => b.classList.toggle("active", b.dataset.interval === interval));
  $("#chart-caption").textContent = `${interval} bars: OHLC and VWAP`;
  state.rolled = null;
  drawChart();
  loadRollup();
}

function drawChart() {
  const canvas = $("#chart");
  const ratio = window.devicePixelRatio || 1;
  const cssW = canvas.clientWidth || 900, cssH = canvas.clientHeight || 320;
  if (canvas.width !== cssW * ratio) { canvas.width = cssW * ratio; canvas.height = cssH * ratio; }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);
  const bars = chartBars();
  canvas.dataset.bars = bars.length;
  canvas.dataset.symbol = state.selected || "";
  canvas.dataset.interval = state.interval;
  if (!bars.length) return;
  const left = 8, right = 64, top_ = 10, bottom = 24;
  const plotW = cssW - left - right, plotH = cssH - top_ - bottom;
  const lo = Math.min(...bars.map((b) => Math.min(b.low, b.vwap)));
  const hi = Math.max(...bars.map((b) => Math.max(b.high, b.vwap)));
  const span = (hi - lo) || Math.abs(hi) * 0.01 || 1;
  const y = (v) => top_ + (hi - v) / span * plotH;
  const step = plotW / Math.max(bars.length, 1);
  const x = (i) => left + step * (i + 0.5);

  ctx.font = "11px system-ui, sans-serif";
  ctx.strokeStyle = "#263140"; ctx.fillStyle = "#7d8899"; ctx.lineWidth = 1;
  for (let k = 0; k <= 4; k++) {          // horizontal grid with price labels
    const v = lo + span * k / 4, yy = Math.round(y(v)) + 0.5;
    ctx.beginPath(); ctx.moveTo(left, yy); ctx.lineTo(left + plotW, yy); ctx.stroke();
    ctx.fillText(fmt(v), left + plotW + 6, yy + 4);
  }
  const every = Math.max(1, Math.ceil(bars.length / 8));
  const label = state.interval.endsWith("d") ? (ms) => new Date(ms).toISOString().slice(5, 10) : hhmm;
  bars.forEach((b, i) => { if (i % every === 0) ctx.fillText(label(b.window_start), x(i) - 14, cssH - 6); });

  const body = Math.max(1, Math.min(14, step * 0.6));
  bars.forEach((b, i) => {                 // candles: wick high-low, body open-close
    const color = b.close >= b.open ? "#3fb950" : "#f85149";
    ctx.strokeStyle = color; ctx.fillStyle = color;
    ctx.globalAlpha = b.is_final ? 1 : 0.55;   // an EARLY pane is still forming
    ctx.beginPath(); ctx.moveTo(x(i), y(b.high)); ctx.lineTo(x(i), y(b.low)); ctx.stroke();
    const t = y(Math.max(b.open, b.close)), h = Math.max(1, Math.abs(y(b.open) - y(b.close)));
    ctx.fillRect(x(i) - body / 2, t, body, h);
  });
  ctx.globalAlpha = 1;
  ctx.strokeStyle = "#58a6ff"; ctx.lineWidth = 2; ctx.beginPath();   // VWAP line
  bars.forEach((b, i) => (i ? ctx.lineTo(x(i), y(b.vwap)) : ctx.moveTo(x(i), y(b.vwap))));
  ctx.stroke();
  const last = bars[bars.length - 1];
  $("#chart-legend").textContent =
    `O ${fmt(last.open)}  H ${fmt(last.high)}  L ${fmt(last.low)}  C ${fmt(last.close)}  ` +
    `VWAP ${fmt(last.vwap)}  SMA5 ${fmt(last.sma_fast)}  SMA20 ${fmt(last.sma_slow)}  (${bars.length} bars)`;
}

// --- alerts ------------------------------------------------------------------
function addAlerts(alerts, prepend) {
  const fresh = alerts.filter((a) => !state.alertIds.has(a.alert_id));
  if (!fresh.length) return;
  fresh.forEach((a) => state.alertIds.add(a.alert_id));
  state.alerts = prepend ? fresh.concat(state.alerts) : state.alerts.concat(fresh);
  state.alerts.sort((a, b) => (b.detected_at || 0) - (a.detected_at || 0));
  state.alerts.splice(MAX_ALERTS).forEach((a) => state.alertIds.delete(a.alert_id));
  state.alertsDirty = true;
  scheduleRender();
}

function renderAlerts() {
  state.alertsDirty = false;
  const list = $("#alerts");
  list.replaceChildren(...state.alerts.map((a) => {
    const li = document.createElement("li");
    li.className = a.severity;
    li.dataset.alertId = a.alert_id;
    const msg = document.createElement("div");
    msg.textContent = a.message || `${a.symbol} ${a.type} ${fmt(a.value)}`;
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = `${a.severity} · ${a.type} · ${new Date(a.detected_at || a.window_start).toISOString().slice(11, 19)}Z`;
    li.append(msg, meta);
    return li;
  }));
  if (!state.alerts.length) list.innerHTML = '<li class="empty">No alerts yet.</li>';
  $("#alert-count").textContent = state.alerts.length ? `(${state.alerts.length})` : "";
}

// --- rejected ticks and latency: polled, the store and /metrics' histogram are their source ---------------
const POLL_MS = 2000;
const REJECTS_SHOWN = 8;
const HOUR_MS = 3600 * 1000;

async function getJson(url) {
  const resp = await fetch(url);
  if (!resp.ok) throw new Error(`${url}: ${resp.status}`);
  return resp.json();
}

// Every text from a dead letter is what a hostile producer wrote: textContent only, never innerHTML.
function renderRejects(summary, letters) {
  const panel = $("#rejects-panel");
  panel.dataset.total = summary.total;
  $("#reject-total").textContent = String(summary.total);
  const reasons = Object.entries(summary.by_reason).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  $("#reject-reasons").replaceChildren(...reasons.map(([reason, n]) => {
    const li = document.createElement("li");
    li.dataset.reason = reason;
    li.dataset.n = n;
    const name = document.createElement("span");
    name.textContent = reason;
    const count = document.createElement("span");
    count.className = "n";
    count.textContent = String(n);
    li.append(name, count);
    return li;
  }));
  const list = $("#rejects");
  if (!letters.length) {
    list.innerHTML = '<li class="empty">No rejected ticks in the last hour.</li>';
    return;
  }
  list.replaceChildren(...letters.map((d) => {
    const li = document.createElement("li");
    li.dataset.reason = d.reason;
    const detail = document.createElement("div");
    detail.className = "detail";
    detail.textContent = d.detail || d.reason;
    const meta = document.createElement("div");
    meta.className = "meta";
    const who = d.symbol || (d.key ? JSON.stringify(d.key) : "no key");
    meta.textContent = `${d.reason} · ${who} · ${new Date(d.rejected_at).toISOString().slice(11, 19)}Z`;
    const raw = document.createElement("div");
    raw.className = "raw";
    raw.textContent = d.raw.length > 200 ? d.raw.slice(0, 200) + "…" : d.raw;
    raw.title = d.raw.slice(0, 2000);
    li.append(detail, meta, raw);
    return li;
  }));
}

const fmtMs = (v) => v === null || v === undefined ? "–" : v >= 10000 ? (v / 1000).toFixed(1) + " s" : Math.round(v) + " ms";

function renderLatency(latency) {
  for (const [hop, q] of Object.entries(latency.hops)) {
    const row = document.querySelector(`#latency tr[data-hop="${CSS.escape(hop)}"]`);
    if (!row) continue;
    row.querySelector(".p50").textContent = fmtMs(q.p50_ms);
    row.querySelector(".p99").textContent = fmtMs(q.p99_ms);
    row.querySelector(".count").textContent = String(q.count);
    row.dataset.count = q.count;
  }
}

async function poll() {
  // Rounded to 10 s: every open dashboard asks the same question, and the server counts it once (3 s cache).
  const since = Math.floor((Date.now() - HOUR_MS) / 10000) * 10000;
  try {
    const [summary, letters] = await Promise.all([
      getJson(`/api/v1/dead-letters/summary?from=${since}`),
      getJson(`/api/v1/dead-letters?from=${since}&limit=${REJECTS_SHOWN}`)]);
    renderRejects(summary, letters.dead_letters);
  } catch (err) { /* not ready yet, or the server restarts: the next poll */ }
  try { renderLatency(await getJson("/api/v1/latency")); } catch (err) { /* the next poll */ }
  setTimeout(poll, POLL_MS);
}

// --- WebSocket ---------------------------------------------------------------
function setConnection(kind, text) {
  document.body.dataset.connection = kind;
  const badge = $("#connection");
  badge.className = "badge " + kind;
  badge.textContent = text;
}

// Every symbol of `channel`, from the resume point if the page has one (a replay of what it missed), else
// from a snapshot.
function subscription(channel) {
  const message = { action: "subscribe", channel, symbols: ["*"] };
  const after = state.positions[channel];
  if (after) message.after = after;
  return JSON.stringify(message);
}

// A snapshot or `replayed` says where the page now is on every partition: it replaces the resume point (a
// topic recreated under the page would otherwise keep it resuming from offsets the topic no longer has).
function resumeFrom(channel, after) {
  state.positions[channel] = Object.assign({}, after || {});
}

// A live or replayed message moves its partition's resume point (messages come in Kafka order per partition).
function saw(channel, msg) {
  const positions = state.positions[channel];
  if (!positions || msg.partition === null || msg.partition === undefined) return;  // not from Kafka
  const key = String(msg.partition);
  if (!(key in positions) || msg.offset > positions[key]) positions[key] = msg.offset;
}

function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/ws`);
  state.ws = ws;
  setConnection("connecting", "connecting…");
  ws.onopen = () => {
    state.retryMs = 500;
    state.lastMessage = Date.now();
    CHANNELS.forEach((channel) => ws.send(subscription(channel)));
    setConnection("live", "live");
  };
  ws.onmessage = (event) => { state.lastMessage = Date.now(); handle(JSON.parse(event.data)); };
  ws.onclose = (event) => {
    if (state.ws !== ws) return;
    const wait = state.retryMs;
    state.retryMs = Math.min(state.retryMs * 2, 10000);
    setConnection("down", `disconnected (${event.code}), retrying in ${Math.round(wait / 1000)} s`);
    setTimeout(connect, wait);
  };
}

function handle(msg) {
  switch (msg.type) {
    case "welcome": state.heartbeatS = msg.heartbeat_s || 15; break;
    case "snapshot":
      resumeFrom(msg.channel, msg.after);
      if (msg.channel === "trends") {
        msg.data.forEach(upsertBar);
        scheduleRender();
      } else {
        addAlerts(msg.data, false);
      }
      break;
    case "trend":
      saw("trends", msg);
      if (upsertBar(msg.data)) scheduleRender();
      break;
    case "alert":
      saw("alerts", msg);
      addAlerts([msg.data], true);
      break;
    case "replayed":
      resumeFrom(msg.channel, msg.after);
      state.replayed += msg.count;
      document.body.dataset.replayed = state.replayed;
      $("#connection").title = `${state.replayed} messages missed while disconnected were replayed`;
      break;
    // A resume the server cannot serve (beyond retention, a topic recreated, too many to replay) is an error
    // followed by a snapshot, which resets the resume point.
    case "error": console.warn("server:", msg.message); break;
    default: break;   // subscribed, heartbeat, pong
  }
}

// --- interval picker -------------------------------------------------------------
document.querySelectorAll("#intervals button").forEach((b) => b.addEventListener("click", () => setInterval_(b.dataset.interval)));

// --- search -------------------------------------------------------------------
$("#search").addEventListener("input", (event) => {
  state.query = event.target.value.trim().toUpperCase();
  state.viewStale = true;
  scheduleRender();
});
$("#search").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && state.visible.length) select(state.visible[0]);
});

// A silent socket (no heartbeat for two periods) is a dead one: reconnect.
setInterval(() => {
  const ws = state.ws;
  if (ws && ws.readyState === WebSocket.OPEN && Date.now() - state.lastMessage > 2 * state.heartbeatS * 1000) {
    ws.close();
  }
  $("#clock").textContent = new Date().toISOString().slice(0, 19).replace("T", " ") + " UTC";
}, 1000);
window.addEventListener("resize", drawChart);
connect();
poll();
