// Live dashboard: REST for history, the /ws feed for everything after.
// No libraries: sparklines and the OHLC chart are drawn on <canvas>.
"use strict";

const HISTORY_BARS = 60;       // bars fetched per symbol for sparklines and the chart
const MAX_ALERTS = 200;
const state = {
  bars: new Map(),             // symbol -> Map(window_start -> bar), latest version kept
  selected: null,
  alerts: [],
  alertIds: new Set(),
  ws: null,
  retryMs: 500,
  lastMessage: 0,
  heartbeatS: 15,
};

const $ = (sel) => document.querySelector(sel);
const fmt = (v, d = 2) => (v === null || v === undefined || Number.isNaN(v)) ? "–" : Number(v).toFixed(d);
const fmtVol = (v) => v >= 1e6 ? (v / 1e6).toFixed(2) + "M" : v >= 1e3 ? (v / 1e3).toFixed(1) + "k" : fmt(v, 0);
const hhmm = (ms) => new Date(ms).toISOString().slice(11, 16);
const signClass = (v) => v > 0 ? "up" : v < 0 ? "down" : "flat";

// --- state -------------------------------------------------------------------
function upsertBar(bar) {
  let windows = state.bars.get(bar.symbol);
  if (!windows) { windows = new Map(); state.bars.set(bar.symbol, windows); }
  const current = windows.get(bar.window_start);
  // (symbol, window_start) is a bar's identity; a higher pane_index is newer.
  if (current && current.pane_index >= bar.pane_index) return false;
  windows.set(bar.window_start, bar);
  if (windows.size > HISTORY_BARS * 2) {
    const oldest = Math.min(...windows.keys());
    windows.delete(oldest);
  }
  return true;
}

function sortedBars(symbol) {
  const windows = state.bars.get(symbol);
  if (!windows) return [];
  return [...windows.values()].sort((a, b) => a.window_start - b.window_start).slice(-HISTORY_BARS);
}

async function loadHistory(symbol) {
  try {
    const resp = await fetch(`/api/v1/trends/${encodeURIComponent(symbol)}?limit=${HISTORY_BARS}`);
    if (!resp.ok) return;
    const body = await resp.json();
    body.trends.forEach(upsertBar);
    renderRow(symbol);
    if (symbol === state.selected) drawChart();
  } catch (err) { /* the live feed still fills in */ }
}

// --- table -------------------------------------------------------------------
function renderRow(symbol, flash = false) {
  const bars = sortedBars(symbol);
  if (!bars.length) return;
  const bar = bars[bars.length - 1];
  const tbody = $("#symbols tbody");
  tbody.querySelector("tr.empty")?.remove();
  let row = tbody.querySelector(`tr[data-symbol="${CSS.escape(symbol)}"]`);
  if (!row) {
    row = document.createElement("tr");
    row.dataset.symbol = symbol;
    row.innerHTML = `<td class="sym"></td><td class="num last"></td><td class="num change"></td>
      <td class="num swing"></td><td class="num vwap"></td><td class="num volume"></td><td class="trend"></td>
      <td><canvas class="spark" width="240" height="56"></canvas></td><td class="pane"></td>`;
    row.addEventListener("click", () => select(symbol));
    // Keep rows sorted by symbol, like /api/v1/symbols.
    const after = [...tbody.querySelectorAll("tr[data-symbol]")].find((r) => r.dataset.symbol > symbol);
    tbody.insertBefore(row, after || null);
    $("#symbol-count").textContent = `(${tbody.querySelectorAll("tr[data-symbol]").length})`;
    if (!state.selected) select(symbol);
  }
  row.querySelector(".sym").textContent = symbol;
  row.querySelector(".last").textContent = fmt(bar.close);
  const change = row.querySelector(".change");
  change.textContent = (bar.change_pct > 0 ? "+" : "") + fmt(bar.change_pct) + "%";
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

// --- main chart --------------------------------------------------------------
function select(symbol) {
  state.selected = symbol;
  document.querySelectorAll("#symbols tr.selected").forEach((r) => r.classList.remove("selected"));
  document.querySelector(`#symbols tr[data-symbol="${CSS.escape(symbol)}"]`)?.classList.add("selected");
  $("#chart-title").textContent = symbol;
  drawChart();
}

function drawChart() {
  const canvas = $("#chart");
  const ratio = window.devicePixelRatio || 1;
  const cssW = canvas.clientWidth || 900, cssH = canvas.clientHeight || 320;
  if (canvas.width !== cssW * ratio) { canvas.width = cssW * ratio; canvas.height = cssH * ratio; }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);
  const bars = state.selected ? sortedBars(state.selected) : [];
  canvas.dataset.bars = bars.length;
  canvas.dataset.symbol = state.selected || "";
  if (!bars.length) return;
  const left = 8, right = 64, top = 10, bottom = 24;
  const plotW = cssW - left - right, plotH = cssH - top - bottom;
  const lo = Math.min(...bars.map((b) => Math.min(b.low, b.vwap)));
  const hi = Math.max(...bars.map((b) => Math.max(b.high, b.vwap)));
  const span = (hi - lo) || Math.abs(hi) * 0.01 || 1;
  const y = (v) => top + (hi - v) / span * plotH;
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
  bars.forEach((b, i) => { if (i % every === 0) ctx.fillText(hhmm(b.window_start), x(i) - 14, cssH - 6); });

  const body = Math.max(1, Math.min(14, step * 0.6));
  bars.forEach((b, i) => {                 // candles: wick high-low, body open-close
    const color = b.close >= b.open ? "#3fb950" : "#f85149";
    ctx.strokeStyle = color; ctx.fillStyle = color;
    ctx.globalAlpha = b.is_final ? 1 : 0.55;   // an EARLY pane is still forming
    ctx.beginPath(); ctx.moveTo(x(i), y(b.high)); ctx.lineTo(x(i), y(b.low)); ctx.stroke();
    const top_ = y(Math.max(b.open, b.close)), h = Math.max(1, Math.abs(y(b.open) - y(b.close)));
    ctx.fillRect(x(i) - body / 2, top_, body, h);
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
  fresh.forEach((a) => state.alertIds.add(a.alert_id));
  state.alerts = prepend ? fresh.concat(state.alerts) : state.alerts.concat(fresh);
  state.alerts.sort((a, b) => (b.detected_at || 0) - (a.detected_at || 0));
  state.alerts.splice(MAX_ALERTS).forEach((a) => state.alertIds.delete(a.alert_id));
  renderAlerts();
}

function renderAlerts() {
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

// --- WebSocket ---------------------------------------------------------------
function setConnection(kind, text) {
  document.body.dataset.connection = kind;
  const badge = $("#connection");
  badge.className = "badge " + kind;
  badge.textContent = text;
}

function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/ws?channel=trends,alerts&symbols=*`);
  state.ws = ws;
  setConnection("connecting", "connecting…");
  ws.onopen = () => { state.retryMs = 500; state.lastMessage = Date.now(); setConnection("live", "live"); };
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
      if (msg.channel === "trends") {
        msg.data.forEach((bar) => { upsertBar(bar); renderRow(bar.symbol); loadHistory(bar.symbol); });
        if (state.selected) drawChart();
      } else {
        addAlerts(msg.data, false);
      }
      break;
    case "trend": {
      const bar = msg.data;
      const known = state.bars.has(bar.symbol);
      if (upsertBar(bar)) {
        renderRow(bar.symbol, true);
        if (bar.symbol === state.selected) drawChart();
      }
      if (!known) loadHistory(bar.symbol);
      break;
    }
    case "alert": addAlerts([msg.data], true); break;
    case "error": console.warn("server:", msg.message); break;
    default: break;   // subscribed, heartbeat, pong
  }
}

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
