// IsoEdge web console. Plain JavaScript, no dependencies, no network beyond this origin.
// Every value from the agent is inserted with textContent (never innerHTML): device ids,
// rule messages and acknowledgement reasons are data, not markup.
"use strict";

const TREND_WINDOW_S = 3600;
const TREND_MIN_STEP_S = 2;

// The catalog (GET /api/i18n): translations, the language's formats and the site's zone
// offsets from the agent's tzdata (browsers carry their own, possibly older, zone rules).
const I18N = {
  lang: "en", messages: {}, codes: {},
  formats: { date: "yyyy-MM-dd", time: "HH:mm:ss", decimal: ".", group: ",", minus: "-" },
  zone: { name: "UTC", offsets: [[0, 0]] },
};

// A message in the page's language; "{name}" placeholders are filled from `params`.
function _(msgid, params) {
  const text = I18N.messages[msgid] || msgid;
  if (!params) return text;
  return text.replace(/\{(\w+)\}/g, (m, k) => (k in params ? String(params[k]) : m));
}

// Codes the agent sends and the page shows translated (marked here for the catalog).
function N_(msgid) { return msgid; }
const CODE_TEXTS = [
  N_("ok"), N_("unhealthy"), N_("connected"), N_("disconnected"), N_("reconnecting"),
  N_("starting"), N_("connecting"), N_("online"), N_("degraded"), N_("offline"), N_("paused"),
  N_("stopped"), N_("good"), N_("uncertain"), N_("bad"), N_("info"), N_("warning"), N_("alarm"),
  N_("critical"), N_("µSv/h"), N_("°C"), N_("m³"), N_("m³/h"), N_("1/m³"), N_("µSv"),
];
// Texts of signing in and out (kept together for translation).
function loginText(kind) {
  return {
    ended: _("Your session ended (signed out, or idle too long). Sign in again."),
    switch: _("Sign in as another user."),
    wrong: _("Wrong name or password."),
    throttled: _("Too many failed sign-ins; wait a minute."),
  }[kind];
}
// A request within this long of a key press or click is the user's; later ones are the page's
// own (live updates) and do not keep an idle session alive.
const ACTIVITY_WINDOW_MS = 5000;
let lastInput = Date.now();

const state = {
  me: null,
  signedOut: false,       // after sign-out or an ended session: no more API calls but login
  latest: new Map(),      // "device\u0000channel" -> reading item
  trends: new Map(),      // same key -> {device, channel, unit, points: [[t, v], ...]}
  alerts: [],
  trendsDirty: false,
  ackAlertId: null,
  ackAlertIds: null,      // a selection acknowledged with one reason and one signature
  selected: new Set(),
};

// ------------------------------------------------------------------ helpers
function $(sel) { return document.querySelector(sel); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

function pill(text, ...classes) {
  return el("span", { class: ["pill", ...classes.filter(Boolean)].join(" ") }, text);
}

function keyOf(item) { return `${item.device}\u0000${item.channel}`; }

// A number as the language writes it: its decimal sign and minus, no digit groups.
function fmtNumber(text) {
  const f = I18N.formats;
  return String(text).replace(/^-/, f.minus).replace(".", f.decimal);
}

function fmtValue(v, resolution) {
  if (v === null || v === undefined) return "—";
  if (typeof v !== "number") return String(v);
  if (resolution > 0) {
    // Rounded to the instrument's resolution (0.001 MBq shows three decimals).
    const places = Math.max(0, -Math.floor(Math.log10(resolution) + 1e-9));
    return fmtNumber((Math.round(v / resolution) * resolution).toFixed(places));
  }
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return fmtNumber(v.toExponential(3));
  // Four significant digits, trailing zeros dropped (the instrument's own text is in `raw`).
  return fmtNumber(String(Number(v.toPrecision(4))));
}

// The instrument's resolution: as sent, else that of its own display (the raw text's number
// nearest the raw value, within 0.5 %, in the unit shown): "F-18  405.069 MBq" reads to 0.001.
function resolutionOf(r) {
  if (r.resolution > 0) return r.resolution;
  const raw = r.raw || {};
  if (typeof raw.text !== "string" || typeof raw.value !== "number" || (raw.unit || r.unit) !== r.unit) return 0;
  const v = Math.abs(raw.value);
  let best = null;
  for (const token of raw.text.match(/\d+(?:\.\d+)?/g) || []) {
    const off = Math.abs(Number(token) - v);
    if (off <= 0.005 * Math.max(v, 1e-12) && (best === null || off < best[0])) best = [off, token];
  }
  return best ? 10 ** -(best[1].split(".")[1] || "").length : 0;
}

// A number typed by a person: "370,5" and "370.5" are 370.5, never 3705; ambiguous is NaN.
function parseDecimal(text) {
  const t = String(text || "").replace(/[\s\u00a0\u202f']/g, "").replace("\u2212", "-");
  if ((t.match(/[.,]/g) || []).length > 1) return NaN;
  if (!/^[+-]?(\d+([.,]\d*)?|[.,]\d+)$/.test(t)) return NaN;
  return Number(t.replace(",", "."));
}

// The site zone's offset at epoch milliseconds `ms` (from the agent's tzdata).
function zoneOffsetS(ms) {
  const s = ms / 1000;
  let offset = 0;
  for (const [from, value] of I18N.zone.offsets) { if (from <= s) offset = value; else break; }
  return offset;
}

function pad(n, width) { return String(n).padStart(width, "0"); }

// Epoch ms as the language's one date/time pattern, in the site zone (or UTC).
function fmtPattern(ms, pattern, utc) {
  const d = new Date(ms + (utc ? 0 : zoneOffsetS(ms) * 1000));
  const parts = { yyyy: pad(d.getUTCFullYear(), 4), MM: pad(d.getUTCMonth() + 1, 2),
    dd: pad(d.getUTCDate(), 2), HH: pad(d.getUTCHours(), 2), mm: pad(d.getUTCMinutes(), 2),
    ss: pad(d.getUTCSeconds(), 2) };
  return pattern.replace(/yyyy|MM|dd|HH|mm|ss/g, (k) => parts[k]);
}

function toMs(value) {
  if (value === null || value === undefined || value === "") return NaN;
  return typeof value === "number" ? value * 1000 : Date.parse(value);
}

// A time in the site's zone with the zone's name: the primary time on every screen.
function fmtTime(value, options) {
  const ms = toMs(value);
  if (Number.isNaN(ms)) return value ? String(value) : "—";
  const f = I18N.formats;
  const text = fmtPattern(ms, `${f.date} ${(options && options.short) ? "HH:mm" : f.time}`, false);
  return options && options.bare ? text : `${text} ${I18N.zone.name}`;
}

// The same instant in UTC (beside the site time where a signature needs both).
function fmtUtc(value) {
  const ms = toMs(value);
  if (Number.isNaN(ms)) return "—";
  return `${fmtPattern(ms, `${I18N.formats.date} ${I18N.formats.time}`, true)} UTC`;
}

// A site-time wall clock for a datetime-local field, and back to UTC (ISO 8601).
function siteInput(ms) { return fmtPattern(ms, "yyyy-MM-ddTHH:mm:ss", false); }
function siteInputToUtc(value) {
  if (!value) return "";
  const wall = Date.parse(`${value.length === 16 ? `${value}:00` : value}Z`);
  if (Number.isNaN(wall)) return "";
  // The offset in force at that wall time (looked up twice across a transition).
  let ms = wall - zoneOffsetS(wall) * 1000;
  ms = wall - zoneOffsetS(ms) * 1000;
  return new Date(ms).toISOString();
}

function fmtAge(seconds) {
  if (seconds === null || seconds === undefined) return _("never");
  if (seconds < 60) return _("{n} s ago", { n: fmtNumber(seconds.toFixed(1)) });
  if (seconds < 3600) {
    return _("{m} min {s} s ago", { m: Math.floor(seconds / 60), s: Math.floor(seconds % 60) });
  }
  return _("{n} h ago", { n: fmtNumber((seconds / 3600).toFixed(1)) });
}

// Units as people write them (the records keep UCUM codes).
const UNIT_TEXT = { "uSv/h": "µSv/h", "Cel": "°C", "1/m3": "1/m³", "m3": "m³", "m3/h": "m³/h",
  "uSv": "µSv", "kBq/m3": "kBq/m³", "Bq/m3": "Bq/m³", "%RH": "%", "[ppm]": "ppm" };
function fmtUnit(unit) {
  if (!unit) return "";
  const text = UNIT_TEXT[unit] || unit;
  return _(text);
}

// A text the agent keeps as data ({code, params}: alerts, QC summaries, audit reasons), in the
// page's language and the site's zone (the same rules as agent/core/messages.py's render()).
const MSG_CODE_KEYS = new Set(["result", "state", "test", "outcome", "release", "severity"]);
const MSG_SIGNED_KEYS = new Set(["deviation", "rate", "half_life_deviation"]);
function msgParam(key, value) {
  if (value === null || value === undefined) return "—";
  if (Array.isArray(value)) return value.map((v) => msgParam(key, v)).join("; ");
  if (typeof value === "object") return "code" in value ? msgText(value) : JSON.stringify(value);
  if ((key === "time" || key.endsWith("_at")) && typeof value === "string") return fmtTime(value);
  if (typeof value === "number") {
    const text = fmtNumber(String(value));
    return MSG_SIGNED_KEYS.has(key) && !Number.isInteger(value) && value >= 0 ? `+${text}` : text;
  }
  if (key === "unit") return fmtUnit(value);
  if (MSG_CODE_KEYS.has(key) && typeof value === "string") return _(value);
  return String(value);
}
function msgText(message, params) {
  const m = (message && typeof message === "object") ? message : { code: message, params };
  if (!m.code) return "";
  const template = I18N.codes[m.code] || m.code;
  const text = I18N.messages[template] || template;
  if (!m.params || !Object.keys(m.params).length) return text;
  return text.replace(/\{(\w+)\}/g, (all, k) => (k in m.params ? msgParam(k, m.params[k]) : all));
}

// One loader's requests may be answered out of order (a reload asked on a record event can
// answer after one an action asked later): number each request with `ask()` and draw its answer
// only if `show(ticket)` says it is not older than the one already drawn.
function answerOrder() {
  let asked = 0;
  let shown = 0;
  return {
    ask() { asked += 1; return asked; },
    show(ticket) {
      if (ticket < shown) return false;
      shown = ticket;
      return true;
    },
    get asked() { return asked; },
  };
}

const SIGNED_OUT_PATHS = new Set(["/api/login", "/api/logout", "/api/session", "/api/i18n"]);
async function api(path, options) {
  const opts = Object.assign({ credentials: "same-origin" }, options || {});
  if (Date.now() - lastInput > ACTIVITY_WINDOW_MS) {
    opts.headers = Object.assign({ "X-IsoEdge-Auto": "1" }, opts.headers || {});
  }
  // Once the person has signed out (or the session ended), the page's timers and the live
  // stream's error handler must not keep asking: every such request would only meet a 401.
  if (state.signedOut && !SIGNED_OUT_PATHS.has(path.split("?")[0])) {
    const error = new Error("signed out");
    error.status = 401;
    throw error;
  }
  const response = await fetch(path, opts);
  if (response.status === 401 && state.me && path !== "/api/login") {
    showLogin(loginText("ended"));
  }
  let body = null;
  const type = response.headers.get("Content-Type") || "";
  if (type.includes("application/json")) body = await response.json();
  if (!response.ok) {
    const message = (body && body.error) || `${response.status} ${response.statusText}`;
    const error = new Error(message);
    error.status = response.status;
    error.code = body && body.code;
    error.body = body;
    throw error;
  }
  return body;
}

// --------------------------------------------------------------------- tabs
function showTab(name) {
  for (const panel of document.querySelectorAll(".tab-panel")) {
    panel.hidden = panel.id !== `tab-${name}`;
  }
  for (const link of document.querySelectorAll("nav a.tab")) {
    link.classList.toggle("active", link.dataset.tab === name);
  }
  if (name === "alerts") loadAlerts();
  if (name === "audit") loadAudit();
  if (window.IsoQC) window.IsoQC.onTab(name);
  if (window.IsoRecords) window.IsoRecords.onTab(name);
  if (window.IsoGenerators) window.IsoGenerators.onTab(name);
}

function currentTab() {
  const name = (location.hash || "#overview").slice(1);
  return ["overview", "qc", "prescriptions", "batches", "elutions", "waste", "alerts", "audit"].includes(name) ? name : "overview";
}

// ------------------------------------------------------------------ health
function renderHealth(snapshot) {
  const broker = snapshot.broker;
  const brokerPill = $("#broker-state");
  brokerPill.textContent = broker === "connected" ? _("connected")
    : _("{state} (buffering)", { state: _(broker) });
  brokerPill.className = `pill ${broker === "connected" ? "connected" : "buffering"}`;
  const health = snapshot.health || { status: "?", reasons: [] };
  const healthPill = $("#health-state");
  healthPill.textContent = _(health.status);
  healthPill.className = `pill ${health.status === "ok" ? "ok" : "unhealthy"}`;
  const banner = $("#health-reasons");
  banner.hidden = !health.reasons.length;
  banner.textContent = (health.reasons_i18n || health.reasons.map((r) => [r, {}]))
    .map(([m, p]) => _(m, { ...p, state: p.state ? _(p.state) : p.state })).join("; ");

  if (window.IsoQC) window.IsoQC.onHealth(snapshot);
  state.deviceHealth = new Map(snapshot.devices.map((d) => [d.device, d]));
  renderReadings();
  const body = $("#devices tbody");
  body.replaceChildren(...snapshot.devices.map((d) => el("tr", { "data-device": d.device },
    el("td", {}, d.device, d.description ? el("div", { class: "muted small" }, d.description) : null),
    el("td", {}, d.driver),
    el("td", { class: "device-state" }, pill(_(d.state), d.state)),
    el("td", { class: "age" }, fmtAge(d.last_reading_age_s)),
    el("td", { class: "num" }, d.readings),
    el("td", { class: "num" }, d.errors),
    el("td", { class: "num" }, d.reconnects),
    el("td", { class: "muted small" }, d.detail || ""),
  )));
}

// ----------------------------------------------------------------- readings
function onReading(item) {
  const key = keyOf(item);
  state.latest.set(key, item);
  if (typeof item.value === "number" && item.quality !== "bad") {
    let series = state.trends.get(key);
    if (!series) {
      series = { device: item.device, channel: item.channel, unit: item.unit, points: [] };
      state.trends.set(key, series);
    }
    const t = Date.parse(item.t) / 1000;
    const last = series.points[series.points.length - 1];
    if (!last || t - last[0] >= TREND_MIN_STEP_S) {
      series.points.push([t, item.value]);
      series.unit = item.unit;
      state.trendsDirty = true;
    }
  }
}

function renderReadings() {
  const body = $("#readings tbody");
  const items = [...state.latest.values()].sort((a, b) =>
    a.device.localeCompare(b.device) || a.channel.localeCompare(b.channel));
  body.replaceChildren(...items.map((r) => {
    const stale = staleness(r.device);
    return el("tr",
      { "data-key": `${r.device}/${r.channel}`, class: `quality-${r.quality}${stale ? " stale" : ""}` },
      el("td", {}, r.device),
      el("td", {}, r.channel),
      el("td", { class: "num value" }, fmtValue(r.value, resolutionOf(r))),
      el("td", {}, fmtUnit(r.unit)),
      el("td", { title: r.reason || "", class: "quality" }, stale ? pill(stale, "stale")
        : [_(r.quality), r.reason ? ` (${r.reason})` : ""].join("")),
      el("td", {}, fmtTime(r.t)));
  }));
  renderDoseCalibrator(items.filter((r) => r.nuclide));
}

// "stale, 1 min 30 s ago" when the device has gone offline: its last value is not live.
function staleness(device) {
  const health = state.deviceHealth && state.deviceHealth.get(device);
  if (!health || !health.stale) return "";
  return _("stale: {state}, last value {age}", { state: _(health.state), age: fmtAge(health.last_reading_age_s) });
}

function renderDoseCalibrator(items) {
  const box = $("#dosecal");
  if (!items.length) return;
  box.replaceChildren(...items.map((r) => el("div", { class: `card dosecal${staleness(r.device) ? " stale" : ""}`, "data-device": r.device },
    staleness(r.device) ? el("div", { class: "stale-flag" }, pill(staleness(r.device), "stale")) : null,
    el("div", { class: "muted small" }, `${r.device} · ${r.channel}`),
    el("div", { class: "nuclide" }, r.nuclide),
    el("div", {},
      el("span", { class: "big measured" }, fmtValue(r.value, resolutionOf(r))), " ", fmtUnit(r.unit),
      el("span", { class: "muted small" }, ` ${_("measured {time}", { time: fmtTime(r.t) })}`)),
    r.value_at_ref !== undefined && r.value_at_ref !== null
      ? el("div", {},
        el("span", { class: "big at-ref" }, fmtValue(r.value_at_ref, resolutionOf(r))), " ", fmtUnit(r.unit),
        el("span", { class: "muted small ref-time" }, ` ${_("at reference {time}", { time: fmtTime(r.ref_time) })}`))
      : el("div", { class: "muted small" }, _("no reference time configured")),
    r.quality !== "good" ? el("div", { class: "error small" }, `${_(r.quality)}: ${r.reason || ""}`) : null,
    r.calibrator_release === "on_hold"
      ? el("div", { class: "held-flag" }, pill(_("calibrator ON HOLD — not for patient doses"), "critical"))
      : null,
  )));
}

// ------------------------------------------------------------------- trends
function isDoseRate(series) { return series.unit === "uSv/h"; }

function renderTrends() {
  state.trendsDirty = false;
  const cutoff = Date.now() / 1000 - TREND_WINDOW_S;
  const all = [...state.trends.values()];
  for (const s of all) s.points = s.points.filter((p) => p[0] >= cutoff);
  const shown = all.filter((s) => s.points.length >= 2)
    .sort((a, b) => (isDoseRate(b) - isDoseRate(a)) || a.device.localeCompare(b.device)
      || a.channel.localeCompare(b.channel))
    .slice(0, 12);
  if (!shown.length) return;
  $("#trends").replaceChildren(...shown.map(chart));
}

function axisValue(v) { return fmtNumber(String(Number(v.toPrecision(3)))); }

function chart(series) {
  const W = 280, H = 90, L = 44, R = 6, T = 6, B = 16;
  const now = Date.now() / 1000;
  // Up to the last hour; while there is less history, the axis spans what there is (>= 1 min).
  const span = Math.min(TREND_WINDOW_S, Math.max(60, now - series.points[0][0]));
  const t0 = now - span;
  let lo = Math.min(...series.points.map((p) => p[1]));
  let hi = Math.max(...series.points.map((p) => p[1]));
  if (hi === lo) { hi += Math.abs(hi) * 0.05 || 1; lo -= Math.abs(lo) * 0.05 || 1; }
  const x = (t) => L + ((t - t0) / span) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  const root = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img" });
  root.append(svg("line", { x1: L, y1: T, x2: L, y2: H - B }));
  root.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B }));
  const label = (text, attrs) => { const t = svg("text", attrs); t.textContent = text; return t; };
  root.append(label(axisValue(hi), { x: L - 3, y: T + 8, "text-anchor": "end" }));
  root.append(label(axisValue(lo), { x: L - 3, y: H - B, "text-anchor": "end" }));
  root.append(label(fmtTime(t0, { bare: true, short: true }).slice(-5), { x: L, y: H - 3 }));
  root.append(label(_("now"), { x: W - R, y: H - 3, "text-anchor": "end" }));
  root.append(svg("polyline", {
    points: series.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" "),
  }));
  const last = series.points[series.points.length - 1][1];
  return el("div", { class: "chart", "data-key": `${series.device}/${series.channel}` },
    el("div", { class: "title" }, `${series.device} · ${series.channel}: ${fmtValue(last)} ${fmtUnit(series.unit)}`),
    root);
}

// ------------------------------------------------------------------- alerts
const ALERT_STATE_TEXT = {
  active: _("active"),
  active_acknowledged: _("active · acknowledged"),
  cleared_unacknowledged: _("cleared · unacknowledged"),
  closed: _("closed"),
};

async function loadAlerts() {
  const filter = $("#alert-filter").value || "open";
  try {
    const data = await api(`/api/alerts?state=${encodeURIComponent(filter)}&limit=500`);
    state.alerts = data.alerts;
    const badge = $("#open-count");
    badge.hidden = data.open === 0;
    badge.textContent = data.open;
    renderAlerts(data.alerts);
    updateSelection();
  } catch (error) {
    console.warn("alerts", error);
  }
}

function renderAlerts(alerts) {
  const mayAck = state.me && state.me.may_acknowledge;
  $("#alerts-table tbody").replaceChildren(...alerts.map((a) => {
    const acked = a.acknowledged
      ? el("div", { class: "acked" }, `${a.acknowledged_by} · ${fmtTime(a.acknowledged_at)}`,
        el("div", { class: "muted small ack-reason" }, a.ack_reason || ""))
      : "";
    const button = !a.acknowledged && mayAck
      ? el("button", { class: "ack", type: "button", onclick: () => openAck(a) }, _("Acknowledge"))
      : null;
    const pick = !a.acknowledged && mayAck
      ? el("input", { type: "checkbox", class: "alert-select", checked: state.selected.has(a.id),
        onchange: (e) => { if (e.target.checked) state.selected.add(a.id); else state.selected.delete(a.id); updateSelection(); } })
      : null;
    return el("tr", { "data-alert-id": a.id, "data-state": a.state },
      el("td", { class: "select" }, pick),
      el("td", {}, pill(_(a.severity), a.severity)),
      el("td", { class: "alert-state" }, pill(_(ALERT_STATE_TEXT[a.state] || a.state),
        a.active ? (a.acknowledged ? "acknowledged" : "open") : "cleared", a.active ? a.severity : "")),
      el("td", {}, a.rule),
      el("td", {}, [a.device, a.channel].filter(Boolean).join(" · ")),
      el("td", { class: "alert-message" }, msgText(a.message, a.params),
        a.cleared_at ? el("div", { class: "muted small" }, _("cleared {time}", { time: fmtTime(a.cleared_at) })) : null),
      el("td", {}, fmtTime(a.raised_at)),
      el("td", {}, acked),
      el("td", {}, button));
  }));
}

function updateSelection() {
  const open = new Set(state.alerts.filter((a) => !a.acknowledged).map((a) => a.id));
  for (const id of [...state.selected]) if (!open.has(id)) state.selected.delete(id);
  const button = $("#ack-selected");
  button.disabled = state.selected.size === 0;
  button.textContent = state.selected.size
    ? _("Acknowledge selected ({n})…", { n: state.selected.size }) : _("Acknowledge selected…");
}

function openAckSelected() {
  const chosen = state.alerts.filter((a) => state.selected.has(a.id));
  if (!chosen.length) return;
  openAck(chosen[0]);
  state.ackAlertId = null;
  state.ackAlertIds = chosen.map((a) => a.id);
  $("#ack-shelve-label").hidden = true;  // one alarm at a time is shelved
  $("#ack-summary").textContent = _("{n} alerts: {rules}", { n: chosen.length,
    rules: [...new Set(chosen.map((a) => `${a.rule} · ${a.device || ""}`))].join("; ") });
}

function openAck(alert) {
  state.ackAlertId = alert.id;
  state.ackAlertIds = null;
  $("#ack-summary").textContent =
    `${_(alert.severity)} · ${alert.rule} · ${alert.device || ""} — ${msgText(alert.message, alert.params)}`;
  const name = $("#ack-name");
  if (state.me && state.me.authenticated) {
    name.value = state.me.name;
    name.readOnly = true;
  } else {
    name.readOnly = false;
  }
  $("#ack-reason").value = "";
  $("#ack-password").value = "";
  $("#ack-shelve").value = "0";
  $("#ack-shelve-label").hidden = !(state.me && state.me.authenticated);
  $("#ack-password-label").hidden = !(state.me && state.me.authenticated);
  $("#ack-error").hidden = true;
  $("#ack-dialog").showModal();
  (name.readOnly ? $("#ack-reason") : name).focus();
}

async function submitAck(event) {
  event.preventDefault();
  const name = $("#ack-name").value.trim();
  const reason = $("#ack-reason").value.trim();
  const password = $("#ack-password").value;
  const errorBox = $("#ack-error");
  if (!name || !reason) {
    errorBox.textContent = _("A name and a reason are required.");
    errorBox.hidden = false;
    return;
  }
  const signing = state.me && state.me.authenticated;
  if (signing && !password) {
    errorBox.textContent = _("Your password is required: an acknowledgement is an electronic signature.");
    errorBox.hidden = false;
    return;
  }
  $("#ack-submit").disabled = true;
  try {
    if (state.ackAlertIds) {
      const answer = await api("/api/alerts/ack", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ ids: state.ackAlertIds, name, reason, password }),
      });
      state.selected.clear();
      const refused = Object.keys(answer.refused || {}).length;
      // Shown beside the button, in the page (no browser dialog).
      const note = $("#ack-selected-note");
      note.textContent = refused ? _("Not acknowledged: {n} (already acknowledged or closed)", { n: refused }) : "";
      note.hidden = !refused;
    } else if (signing && Number($("#ack-shelve").value) > 0) {
      await api(`/api/alerts/${encodeURIComponent(state.ackAlertId)}/shelve`, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ name, reason, password, minutes: Number($("#ack-shelve").value) }),
      });
    } else {
      await api(`/api/alerts/${encodeURIComponent(state.ackAlertId)}/ack`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(signing ? { name, reason, password } : { name, reason }),
      });
    }
    $("#ack-dialog").close();
    await loadAlerts();
  } catch (error) {
    errorBox.textContent = _("Not acknowledged: {reason}", { reason: error.message });
    errorBox.hidden = false;
    $("#ack-password").value = "";
  } finally {
    $("#ack-submit").disabled = false;
  }
}

// -------------------------------------------------------------------- audit
function localToUtc(value) {
  // datetime-local fields hold the site's wall time (its zone is named beside them).
  return siteInputToUtc(value);
}

function auditQuery() {
  const params = new URLSearchParams();
  const since = localToUtc($("#audit-since").value);
  const until = localToUtc($("#audit-until").value);
  if (since) params.set("since", since);
  if (until) params.set("until", until);
  if ($("#audit-actor").value.trim()) params.set("actor", $("#audit-actor").value.trim());
  if ($("#audit-action").value.trim()) params.set("action", $("#audit-action").value.trim());
  return params.toString();
}

const AUDIT_KNOWN = new Set(["id", "t", "event", "actor", "subject", "old", "new", "reason",
  "reason_params"]);

// An audit record's reason: a person's words as typed, the system's as a message code.
function auditReason(row) {
  if (!row.reason) return "";
  return row.reason_params || I18N.codes[row.reason] ? msgText(row.reason, row.reason_params) : row.reason;
}

// A value as a person reads it: numbers in the language's format, objects as "key: value".
const ISO_INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/;
function plain(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") return fmtValue(v);
  if (typeof v === "string" && ISO_INSTANT.test(v)) return fmtTime(v);  // site time, its zone
  if (Array.isArray(v)) return v.map(plain).join(", ");
  if (typeof v === "object") return Object.entries(v).map(([k, x]) => `${k}: ${plain(x)}`).join("; ");
  return String(v);
}

function fmtChange(row) {
  // Objects: only the fields that changed ("state: active → active_acknowledged").
  const show = plain;
  const { old: before, new: after } = row;
  if ((before === null || before === undefined) && (after === null || after === undefined)) return "";
  const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
  if (isObj(before) && isObj(after)) {
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])]
      .filter((k) => JSON.stringify(before[k]) !== JSON.stringify(after[k]));
    return keys.map((k) => `${k}: ${show(before[k])} → ${show(after[k])}`).join("\n");
  }
  if (before === null || before === undefined) return show(after);
  return `${show(before)} → ${show(after)}`;
}

async function loadAudit() {
  const query = auditQuery();
  $("#audit-csv").href = `/api/audit.csv${query ? `?${query}` : ""}`;
  $("#audit-pdf").href = `/api/audit/report.pdf${query ? `?${query}` : ""}`;
  try {
    const data = await api(`/api/audit${query ? `?${query}` : ""}`);
    // The trail comes oldest first (as exported); the view shows the newest at the top.
    $("#audit-table tbody").replaceChildren(...data.rows.slice().reverse().map((row) => {
      const details = {};
      for (const [k, v] of Object.entries(row)) {
        if (!AUDIT_KNOWN.has(k) && v !== null && v !== undefined) details[k] = v;
      }
      return el("tr", { "data-action": row.event || "", "data-id": row.id },
        el("td", {}, fmtTime(row.t)),
        el("td", {}, row.event || ""),
        el("td", {}, row.actor || ""),
        el("td", {}, row.subject || ""),
        el("td", { class: "change" }, fmtChange(row)),
        el("td", { class: "audit-reason" }, auditReason(row)),
        el("td", { class: "muted small" }, Object.keys(details).length ? plain(details) : ""));
    }));
  } catch (error) {
    console.warn("audit", error);
  }
}

// ------------------------------------------------------------ event stream
let alertReload = null;
function scheduleAlertReload() {
  clearTimeout(alertReload);
  alertReload = setTimeout(loadAlerts, 200);
}

function connectStream() {
  const source = new EventSource("/api/stream");
  const streamPill = $("#stream-state");
  source.onopen = () => { streamPill.textContent = _("live"); streamPill.className = "pill live"; };
  source.onerror = () => {
    streamPill.textContent = _("reconnecting"); streamPill.className = "pill warning";
    // The stream ends with the session: find out whether that is why.
    api("/api/state").catch(() => {});
  };
  state.stream = source;
  source.addEventListener("readings", (e) => {
    for (const item of JSON.parse(e.data).items) onReading(item);
    renderReadings();
  });
  source.addEventListener("health", (e) => renderHealth(JSON.parse(e.data)));
  source.addEventListener("alerts", () => scheduleAlertReload());
  source.addEventListener("audit", () => {
    if (currentTab() === "audit") loadAudit();
    if (window.IsoQC) window.IsoQC.onRecord();  // dispensing records, signatures
  });
  source.addEventListener("qc", () => {
    if (window.IsoQC) window.IsoQC.onRecord();
    if (window.IsoRecords) window.IsoRecords.onRecord();
    if (window.IsoGenerators) window.IsoGenerators.onRecord();
  });
  source.addEventListener("overflow", () => { source.close(); setTimeout(connectStream, 500); });
}

// ---------------------------------------------------------- sign in and out
function showLogin(message) {
  state.signedOut = true;
  if (state.stream) { state.stream.close(); state.stream = null; }
  for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
  document.body.classList.add("signed-out");
  $("#login").hidden = false;
  $("#login-message").textContent = message || "";
  $("#login-password").value = "";
  $("#login-name").focus();
}

async function submitLogin(event) {
  event.preventDefault();
  const error = $("#login-error");
  error.hidden = true;
  try {
    await api("/api/login", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name: $("#login-name").value, password: $("#login-password").value }),
    });
  } catch (e) {
    error.textContent = e.status === 401 ? loginText("wrong") : e.status === 429 ? loginText("throttled") : e.message;
    error.hidden = false;
    $("#login-password").value = "";
    return;
  }
  location.reload();
}

async function signOut(message) {
  // The stream closes first: the server ends it with the session, and its error handler would
  // otherwise ask once more for the state and meet a 401.
  state.signedOut = true;
  if (state.stream) { state.stream.close(); state.stream = null; }
  try {
    await api("/api/logout", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
  } catch (e) { console.warn("sign out", e); }
  state.me = null;
  showLogin(message);
}

// --------------------------------------------------------------------- boot
function roleText(role) {
  const ROLE_TEXT = { qa: _("QA officer"), viewer: _("viewer"), technologist: _("technologist"),
                      radiopharmacist: _("radiopharmacist") };
  return ROLE_TEXT[role] || role;
}

// The header's language selector: remembered in a cookie (the server renders the page in it)
// and in localStorage (a cleared cookie is restored from it).
const LANG_COOKIE = "isoedge_lang";
function chooseLanguage(lang) {
  document.cookie = `${LANG_COOKIE}=${encodeURIComponent(lang)}; path=/; max-age=31536000; SameSite=Strict`;
  try { localStorage.setItem(LANG_COOKIE, lang); } catch (error) { /* private mode */ }
}
function rememberedLanguage() {
  try { return localStorage.getItem(LANG_COOKIE); } catch (error) { return null; }
}

async function loadCatalog() {
  const remembered = rememberedLanguage();
  if (remembered && !document.cookie.split("; ").some((c) => c.startsWith(`${LANG_COOKIE}=`))) {
    chooseLanguage(remembered);
    if (remembered !== document.documentElement.lang) { location.reload(); return false; }
  }
  Object.assign(I18N, await api(`/api/i18n?lang=${encodeURIComponent(document.documentElement.lang)}`));
  const select = $("#lang-select");
  if (select) {
    select.addEventListener("change", () => { chooseLanguage(select.value); location.reload(); });
  }
  return true;
}

async function boot() {
  if (!(await loadCatalog())) return;
  for (const kind of ["keydown", "pointerdown"]) {
    document.addEventListener(kind, () => { lastInput = Date.now(); }, true);
  }
  $("#login-form").addEventListener("submit", submitLogin);
  $("#sign-out").addEventListener("click", () => signOut(""));
  $("#switch-user").addEventListener("click", () => signOut(loginText("switch")));
  const session = await api("/api/session");
  if (!session.signed_in) { showLogin(""); return; }
  const initial = await api("/api/state");
  state.me = initial.me;
  $("#sign-out").hidden = $("#switch-user").hidden = !initial.me.authenticated;
  // The audit view starts at the last 24 hours (local time in the field, UTC on the wire).
  const dayAgo = new Date(Date.now() - 86400e3);
  $("#audit-since").value = siteInput(dayAgo.getTime());
  $("#agent-name").textContent = `${initial.agent.site} / ${initial.agent.id}`;
  $("#me").textContent = initial.me.authenticated
    ? `${initial.me.name} (${roleText(initial.me.role)})`
    : _("access control off (loopback)");
  if (window.IsoQC) window.IsoQC.boot(initial);
  renderHealth(initial);
  try {
    const trends = await api("/api/trends");
    for (const s of trends.series) {
      state.trends.set(`${s.device}\u0000${s.channel}`, { ...s, points: s.points.slice() });
    }
  } catch (error) { console.warn("trends", error); }
  for (const item of initial.latest) onReading(item);
  renderReadings();
  renderTrends();
  setInterval(() => { if (state.trendsDirty) renderTrends(); }, 1000);
  window.addEventListener("hashchange", () => showTab(currentTab()));
  $("#alert-filter").addEventListener("change", loadAlerts);
  $("#audit-filters").addEventListener("submit", (e) => { e.preventDefault(); loadAudit(); });
  $("#ack-form").addEventListener("submit", submitAck);
  $("#ack-selected").addEventListener("click", openAckSelected);
  $("#alerts-select-all").addEventListener("change", (e) => {
    for (const a of state.alerts) if (!a.acknowledged) { if (e.target.checked) state.selected.add(a.id); else state.selected.delete(a.id); }
    renderAlerts(state.alerts);
    updateSelection();
  });
  $("#ack-cancel").addEventListener("click", () => $("#ack-dialog").close());
  showTab(currentTab());
  loadAlerts();
  connectStream();
}

document.addEventListener("DOMContentLoaded", () => {
  boot().catch((error) => {
    document.body.prepend(el("div", { class: "banner" }, _("Console failed to load: {reason}", { reason: error.message })));
  });
});
