// IsoEdge web console. Plain JavaScript, no dependencies, no network beyond this origin.
// Every value from the agent is inserted with textContent (never innerHTML): device ids,
// rule messages and acknowledgement reasons are data, not markup.
"use strict";

const TREND_WINDOW_S = 3600;
const TREND_MIN_STEP_S = 2;

// Texts of signing in and out (kept together for translation).
const LOGIN_TEXT = {
  ended: "Your session ended (signed out, or idle too long). Sign in again.",
  switch: "Sign in as another user.",
  wrong: "Wrong name or password.",
  throttled: "Too many failed sign-ins; wait a minute.",
};
// A request within this long of a key press or click is the user's; later ones are the page's
// own (live updates) and do not keep an idle session alive.
const ACTIVITY_WINDOW_MS = 5000;
let lastInput = Date.now();

const state = {
  me: null,
  latest: new Map(),      // "device\u0000channel" -> reading item
  trends: new Map(),      // same key -> {device, channel, unit, points: [[t, v], ...]}
  alerts: [],
  trendsDirty: false,
  ackAlertId: null,
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

function fmtValue(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v !== "number") return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(3);
  // Six significant digits, trailing zeros dropped (the instrument's own text is in `raw`).
  return String(Number(v.toPrecision(6)));
}

function fmtTime(text) {
  if (!text) return "—";
  return String(text).replace("T", " ").replace(/\.\d+Z$/, "Z").replace(/Z$/, "");
}

function fmtAge(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  if (seconds < 60) return `${seconds.toFixed(1)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.floor(seconds % 60)} s ago`;
  return `${(seconds / 3600).toFixed(1)} h ago`;
}

async function api(path, options) {
  const opts = Object.assign({ credentials: "same-origin" }, options || {});
  if (Date.now() - lastInput > ACTIVITY_WINDOW_MS) {
    opts.headers = Object.assign({ "X-IsoEdge-Auto": "1" }, opts.headers || {});
  }
  const response = await fetch(path, opts);
  if (response.status === 401 && state.me && path !== "/api/login") {
    showLogin(LOGIN_TEXT.ended);
  }
  let body = null;
  const type = response.headers.get("Content-Type") || "";
  if (type.includes("application/json")) body = await response.json();
  if (!response.ok) {
    const message = (body && body.error) || `${response.status} ${response.statusText}`;
    const error = new Error(message);
    error.status = response.status;
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
}

function currentTab() {
  const name = (location.hash || "#overview").slice(1);
  return ["overview", "qc", "prescriptions", "alerts", "audit"].includes(name) ? name : "overview";
}

// ------------------------------------------------------------------ health
function renderHealth(snapshot) {
  const broker = snapshot.broker;
  const brokerPill = $("#broker-state");
  brokerPill.textContent = broker === "connected" ? "connected" : `${broker} (buffering)`;
  brokerPill.className = `pill ${broker === "connected" ? "connected" : "buffering"}`;
  const health = snapshot.health || { status: "?", reasons: [] };
  const healthPill = $("#health-state");
  healthPill.textContent = health.status;
  healthPill.className = `pill ${health.status === "ok" ? "ok" : "unhealthy"}`;
  const banner = $("#health-reasons");
  banner.hidden = !health.reasons.length;
  banner.textContent = health.reasons.join("; ");

  if (window.IsoQC) window.IsoQC.onHealth(snapshot);
  const body = $("#devices tbody");
  body.replaceChildren(...snapshot.devices.map((d) => el("tr", { "data-device": d.device },
    el("td", {}, d.device, d.description ? el("div", { class: "muted small" }, d.description) : null),
    el("td", {}, d.driver),
    el("td", { class: "device-state" }, pill(d.state, d.state)),
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
  body.replaceChildren(...items.map((r) => el("tr",
    { "data-key": `${r.device}/${r.channel}`, class: `quality-${r.quality}` },
    el("td", {}, r.device),
    el("td", {}, r.channel),
    el("td", { class: "num value" }, fmtValue(r.value)),
    el("td", {}, r.unit || ""),
    el("td", { title: r.reason || "" }, r.quality, r.reason ? ` (${r.reason})` : ""),
    el("td", {}, fmtTime(r.t)),
  )));
  renderDoseCalibrator(items.filter((r) => r.nuclide));
}

function renderDoseCalibrator(items) {
  const box = $("#dosecal");
  if (!items.length) return;
  box.replaceChildren(...items.map((r) => el("div", { class: "card dosecal", "data-device": r.device },
    el("div", { class: "muted small" }, `${r.device} · ${r.channel}`),
    el("div", { class: "nuclide" }, r.nuclide),
    el("div", {},
      el("span", { class: "big measured" }, fmtValue(r.value)), " ", r.unit || "",
      el("span", { class: "muted small" }, ` measured ${fmtTime(r.t)}`)),
    r.value_at_ref !== undefined && r.value_at_ref !== null
      ? el("div", {},
        el("span", { class: "big at-ref" }, fmtValue(r.value_at_ref)), " ", r.unit || "",
        el("span", { class: "muted small ref-time" }, ` at reference ${fmtTime(r.ref_time)}`))
      : el("div", { class: "muted small" }, "no reference time configured"),
    r.quality !== "good" ? el("div", { class: "error small" }, `${r.quality}: ${r.reason || ""}`) : null,
    r.calibrator_release === "on_hold"
      ? el("div", { class: "held-flag" }, pill("calibrator ON HOLD — not for patient doses", "critical"))
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

function axisValue(v) { return String(Number(v.toPrecision(3))); }

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
  root.append(label(`−${Math.round(span / 60)} min`, { x: L, y: H - 3 }));
  root.append(label("now", { x: W - R, y: H - 3, "text-anchor": "end" }));
  root.append(svg("polyline", {
    points: series.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" "),
  }));
  const last = series.points[series.points.length - 1][1];
  return el("div", { class: "chart", "data-key": `${series.device}/${series.channel}` },
    el("div", { class: "title" }, `${series.device} · ${series.channel}: ${fmtValue(last)} ${series.unit || ""}`),
    root);
}

// ------------------------------------------------------------------- alerts
const ALERT_STATE_TEXT = {
  active: "active",
  active_acknowledged: "active · acknowledged",
  cleared_unacknowledged: "cleared · unacknowledged",
  closed: "closed",
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
      ? el("button", { class: "ack", type: "button", onclick: () => openAck(a) }, "Acknowledge")
      : null;
    return el("tr", { "data-alert-id": a.id, "data-state": a.state },
      el("td", {}, pill(a.severity, a.severity)),
      el("td", { class: "alert-state" }, pill(ALERT_STATE_TEXT[a.state] || a.state,
        a.active ? (a.acknowledged ? "acknowledged" : "open") : "cleared", a.active ? a.severity : "")),
      el("td", {}, a.rule),
      el("td", {}, [a.device, a.channel].filter(Boolean).join(" · ")),
      el("td", {}, a.message || "",
        a.cleared_at ? el("div", { class: "muted small" }, `cleared ${fmtTime(a.cleared_at)}`) : null),
      el("td", {}, fmtTime(a.raised_at)),
      el("td", {}, acked),
      el("td", {}, button));
  }));
}

function openAck(alert) {
  state.ackAlertId = alert.id;
  $("#ack-summary").textContent =
    `${alert.severity} · ${alert.rule} · ${alert.device || ""} — ${alert.message || ""}`;
  const name = $("#ack-name");
  if (state.me && state.me.authenticated) {
    name.value = state.me.name;
    name.readOnly = true;
  } else {
    name.readOnly = false;
  }
  $("#ack-reason").value = "";
  $("#ack-password").value = "";
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
    errorBox.textContent = "A name and a reason are required.";
    errorBox.hidden = false;
    return;
  }
  const signing = state.me && state.me.authenticated;
  if (signing && !password) {
    errorBox.textContent = "Your password is required: an acknowledgement is an electronic signature.";
    errorBox.hidden = false;
    return;
  }
  $("#ack-submit").disabled = true;
  try {
    await api(`/api/alerts/${encodeURIComponent(state.ackAlertId)}/ack`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(signing ? { name, reason, password } : { name, reason }),
    });
    $("#ack-dialog").close();
    await loadAlerts();
  } catch (error) {
    errorBox.textContent = `Not acknowledged: ${error.message}`;
    errorBox.hidden = false;
    $("#ack-password").value = "";
  } finally {
    $("#ack-submit").disabled = false;
  }
}

// -------------------------------------------------------------------- audit
function localToUtc(value) {
  // datetime-local gives the user's local wall time; the agent works in UTC.
  return value ? new Date(value).toISOString() : "";
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

const AUDIT_KNOWN = new Set(["id", "t", "event", "actor", "subject", "old", "new", "reason"]);

function fmtChange(row) {
  // Objects: only the fields that changed ("state: active → active_acknowledged").
  const show = (v) => (v === null || v === undefined ? "—" : typeof v === "object" ? JSON.stringify(v) : String(v));
  const { old: before, new: after } = row;
  if ((before === null || before === undefined) && (after === null || after === undefined)) return "";
  const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
  if (isObj(before) && isObj(after)) {
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])]
      .filter((k) => JSON.stringify(before[k]) !== JSON.stringify(after[k]));
    return keys.map((k) => `${k}: ${show(before[k])} → ${show(after[k])}`).join("; ");
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
        el("td", {}, fmtChange(row)),
        el("td", {}, row.reason || ""),
        el("td", { class: "muted small" }, Object.keys(details).length ? JSON.stringify(details) : ""));
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
  source.onopen = () => { streamPill.textContent = "live"; streamPill.className = "pill live"; };
  source.onerror = () => {
    streamPill.textContent = "reconnecting"; streamPill.className = "pill warning";
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
  source.addEventListener("qc", () => { if (window.IsoQC) window.IsoQC.onRecord(); });
  source.addEventListener("overflow", () => { source.close(); setTimeout(connectStream, 500); });
}

// ---------------------------------------------------------- sign in and out
function showLogin(message) {
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
    error.textContent = e.status === 401 ? LOGIN_TEXT.wrong : e.status === 429 ? LOGIN_TEXT.throttled : e.message;
    error.hidden = false;
    $("#login-password").value = "";
    return;
  }
  location.reload();
}

async function signOut(message) {
  try {
    await api("/api/logout", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
  } catch (e) { console.warn("sign out", e); }
  state.me = null;
  showLogin(message);
}

// --------------------------------------------------------------------- boot
async function boot() {
  for (const kind of ["keydown", "pointerdown"]) {
    document.addEventListener(kind, () => { lastInput = Date.now(); }, true);
  }
  $("#login-form").addEventListener("submit", submitLogin);
  $("#sign-out").addEventListener("click", () => signOut(""));
  $("#switch-user").addEventListener("click", () => signOut(LOGIN_TEXT.switch));
  const session = await api("/api/session");
  if (!session.signed_in) { showLogin(""); return; }
  const initial = await api("/api/state");
  state.me = initial.me;
  $("#sign-out").hidden = $("#switch-user").hidden = !initial.me.authenticated;
  // The audit view starts at the last 24 hours (local time in the field, UTC on the wire).
  const dayAgo = new Date(Date.now() - 86400e3);
  $("#audit-since").value = new Date(dayAgo.getTime() - dayAgo.getTimezoneOffset() * 60e3)
    .toISOString().slice(0, 19);
  $("#agent-name").textContent = `${initial.agent.site} / ${initial.agent.id}`;
  const ROLE_TEXT = { qa: "QA officer", viewer: "viewer", technologist: "technologist",
                      radiopharmacist: "radiopharmacist" };
  $("#me").textContent = initial.me.authenticated
    ? `${initial.me.name} (${ROLE_TEXT[initial.me.role] || initial.me.role})`
    : "access control off (loopback)";
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
  $("#ack-cancel").addEventListener("click", () => $("#ack-dialog").close());
  showTab(currentTab());
  loadAlerts();
  connectStream();
}

document.addEventListener("DOMContentLoaded", () => {
  boot().catch((error) => {
    document.body.prepend(el("div", { class: "banner" }, `Console failed to load: ${error.message}`));
  });
});
