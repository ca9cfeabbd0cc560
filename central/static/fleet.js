"use strict";
const $ = (id) => document.getElementById(id);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const badge = (text, cls) => `<span class="badge ${esc(cls)}">${esc(text)}</span>`;
// A time in its site's zone (`zone`, an IANA name from the ingest config) with the zone's name.
function when(t, zone) {
  if (!t) return "–";
  const timeZone = zone || "UTC";
  let text;
  try {
    text = new Date(t).toLocaleString(I18N.lang, { timeZone });
  } catch (e) {
    text = new Date(t).toLocaleString(I18N.lang, { timeZone: "UTC" });
    return `${text} UTC`;
  }
  return `${text} ${timeZone}`;
}

// The catalog (GET /api/i18n) in the page's language; "{name}" placeholders from `params`.
const I18N = { lang: document.documentElement.lang || "en", messages: {} };
function _(msgid, params) {
  const text = I18N.messages[msgid] || msgid;
  return params ? text.replace(/\{(\w+)\}/g, (m, k) => (k in params ? String(params[k]) : m)) : text;
}
function N_(msgid) { return msgid; }
const CODE_TEXTS = [N_("online"), N_("offline"), N_("ok"), N_("broken"), N_("gap"), N_("pass"),
  N_("fail"), N_("action"), N_("no data")];
let devicesKey = "";

function localInput(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

function renderAgents(agents) {
  $("agents").querySelector("tbody").innerHTML = agents.map((a) => {
    const gaps = a.gaps.length === 0 ? badge(_("none"), "ok") : a.gaps.map(([lo, hi]) => {
      const permanent = a.permanent_gaps.some(([p, q]) => p === lo && q === hi);
      return badge(permanent ? _("{range} permanent", { range: `${lo}..${hi}` }) : `${lo}..${hi}`,
        permanent ? "bad" : "warn");
    }).join(" ");
    const devices = Object.entries(a.devices || {}).map(([id, d]) => `${esc(id)}: ${esc(d.state)}`).join("<br>");
    return `<tr data-agent="${esc(a.site)}/${esc(a.agent)}">
      <td>${esc(a.site)}</td><td>${esc(a.agent)}</td>
      <td>${badge(_(a.state), a.online ? "online" : "offline")}</td>
      <td class="when">${esc(when(a.last_seen, a.zone))}</td>
      <td>${a.first_seq == null ? "–" : `${a.first_seq}..${a.last_seq}`}</td>
      <td>${a.backlog == null ? "–" : a.backlog}</td>
      <td>${a.envelopes}</td><td>${a.readings}</td>
      <td class="gaps">${gaps}</td><td>${badge(_(a.chain), a.chain === "ok" ? "ok" : a.chain === "no data" ? "warn" : "broken")}</td>
      <td>${devices || "–"}</td></tr>`;
  }).join("");
}

function renderAlerts(alerts) {
  $("no-alerts").hidden = alerts.length > 0;
  $("alerts").querySelector("tbody").innerHTML = alerts.map((a) => `<tr>
    <td>${badge(_(a.kind), a.kind === "gap" && a.severity !== "critical" ? "warn" : "bad")}${a.severity === "critical" ? " " + badge(_("critical"), "bad") : ""}</td><td>${esc(a.site)}/${esc(a.agent)}</td>
    <td class="alert-text">${esc(a.text || a.message)}</td><td>${a.count}</td><td class="when">${esc(when(a.raised, a.zone))}</td></tr>`).join("");
}

function renderCalibrators(cals) {
  $("no-calibrators").hidden = cals.length > 0;
  $("calibrators").querySelector("tbody").innerHTML = cals.map((c) => {
    const tests = Object.entries(c.tests).map(([test, r]) => `${esc(test)}: ${badge(_(r.result), r.result === "pass" ? "ok" : "bad")} <span class="muted">${esc(when(r.t, c.zone))}</span>`).join("<br>");
    return `<tr><td>${esc(c.site)}/${esc(c.agent)}</td><td>${esc(c.device)}</td>
      <td>${badge(c.release === "released" ? _("released") : _("ON HOLD"), c.release)}</td>
      <td>${esc(c.reason || "")}</td><td>${tests || "–"}</td></tr>`;
  }).join("");
}

// Shipment states (central/shipments.py), shown in the page's language.
const SHIPMENT_STATES = {
  awaiting: N_("awaiting receipt"), within: N_("within tolerance"),
  out_of_tolerance: N_("out of tolerance"), misrouted: N_("received at another site"),
  unmatched: N_("no receipt"), no_shipment: N_("no shipment record"), invalid: N_("unknown nuclide"),
};
const ALERT_KINDS = [N_("shipment")];  // the central alert kind of central/shipments.py
const num = (v, digits) => (v == null ? "–" : Number(v).toFixed(digits));

function renderShipments(shipments) {
  $("no-shipments").hidden = shipments.length > 0;
  $("shipments").querySelector("tbody").innerHTML = shipments.map((s) => {
    const cls = s.state === "within" ? "ok" : s.state === "awaiting" ? "warn" : "bad";
    const to = s.receipt_site && s.receipt_site !== s.destination_site
      ? `${esc(s.destination_site)} → ${esc(s.receipt_site)}` : esc(s.destination_site || s.receipt_site);
    return `<tr data-shipment="${esc(s.site)}/${esc(s.shipment_id)}" data-state="${esc(s.state)}">
      <td>${esc(s.shipment_id)}<br><span class="muted">${esc(when(s.shipped || s.received, s.zone))}</span></td>
      <td>${esc(s.site)}</td><td>${to}</td><td>${esc(s.nuclide || "–")}</td>
      <td>${num(s.activity_mbq, 1)}</td><td>${num(s.expected_mbq, 1)}</td><td>${num(s.measured_mbq, 1)}</td>
      <td>${s.difference_pct == null ? "–" : `${num(s.difference_pct, 2)} %`}</td>
      <td>${badge(_(SHIPMENT_STATES[s.state] || s.state), cls)}</td></tr>`;
  }).join("");
}

// The chart's times: the device's site zone (its name printed beside the last one).
const deviceZones = {};
function axisTime(ms, zone) {
  try {
    return new Date(ms).toLocaleTimeString(I18N.lang, { timeZone: zone });
  } catch (e) {
    return new Date(ms).toLocaleTimeString(I18N.lang, { timeZone: "UTC" });
  }
}

function renderDevices(devices) {
  const key = JSON.stringify(devices);
  if (key === devicesKey) return;
  devicesKey = key;
  for (const d of devices) deviceZones[`${d.site}|${d.agent}|${d.device}|${d.channel}`] = d.zone || "UTC";
  const select = $("device");
  const current = select.value;
  select.innerHTML = devices.map((d) => {
    const v = `${d.site}|${d.agent}|${d.device}|${d.channel}`;
    return `<option value="${esc(v)}">${esc(d.site)}/${esc(d.agent)} ${esc(d.device)} (${esc(d.channel)})</option>`;
  }).join("");
  if (current && devices.some((d) => `${d.site}|${d.agent}|${d.device}|${d.channel}` === current)) select.value = current;
  else if (devices.length) plot();
}

function selection() {
  const [site, agent, device, channel] = ($("device").value || "|||").split("|");
  const params = new URLSearchParams({site, agent, device, channel});
  if ($("from").value) params.set("from", new Date($("from").value).toISOString());
  if ($("to").value) params.set("to", new Date($("to").value).toISOString());
  return params;
}

async function plot() {
  if (!$("device").value) return;
  const params = selection();
  $("csv").href = `/export.csv?${params}`;
  const res = await fetch(`/api/readings?${params}`);
  if (!res.ok) { $("plot-info").textContent = _("error {status}", { status: res.status }); return; }
  const data = await res.json();
  // Numbers and booleans (as 0/1) are plotted; text states are listed in the CSV export.
  const pts = data.points.filter((p) => typeof p[1] === "number" || typeof p[1] === "boolean")
    .map((p) => [Date.parse(p[0]), Number(p[1])]);
  const svg = $("plot");
  if (pts.length === 0) { svg.innerHTML = ""; $("plot-info").textContent = _("No readings in this range."); return; }
  const [W, H, L, B] = [900, 300, 60, 30];
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs) || 1];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y0 === y1) { y0 -= 1; y1 += 1; }
  const sx = (x) => L + ((x - x0) / ((x1 - x0) || 1)) * (W - L - 10);
  const sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - B - 10);
  const d = pts.map((p, i) => `${i ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
  const unit = data.points[0][2] || "";
  const zone = deviceZones[$("device").value] || "UTC";
  svg.innerHTML = `<line class="axis" x1="${L}" y1="${H - B}" x2="${W - 10}" y2="${H - B}"/>
    <line class="axis" x1="${L}" y1="10" x2="${L}" y2="${H - B}"/>
    <text x="4" y="16">${esc(y1.toPrecision(4))}</text><text x="4" y="${H - B}">${esc(y0.toPrecision(4))}</text>
    <text x="${L}" y="${H - 8}">${esc(axisTime(x0, zone))}</text>
    <text x="${W - 200}" y="${H - 8}">${esc(axisTime(x1, zone))} ${esc(zone)}</text>
    <text x="${L + 6}" y="24">${esc(unit)}</text>
    <path class="line" d="${d}"/>`;
  $("plot-info").textContent = `${_("{n} readings", { n: data.points.length })}${data.truncated ? ` ${_("(truncated)")}` : ""}, ${unit}`;
}

async function refresh() {
  try {
    const res = await fetch("/api/fleet");
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const data = await res.json();
    renderAgents(data.agents);
    renderAlerts(data.alerts);
    renderCalibrators(data.calibrators);
    renderShipments(data.shipments || []);
    renderDevices(data.devices);
    $("updated").textContent = _("updated {time}", { time: new Date(data.t).toLocaleTimeString(I18N.lang) });
  } catch (err) {
    $("updated").textContent = _("cannot load: {reason}", { reason: err.message });
  }
}

$("to").value = localInput(new Date(Date.now() + 60000));
$("from").value = localInput(new Date(Date.now() - 3600000));
$("query").addEventListener("submit", (e) => { e.preventDefault(); plot(); });
$("device").addEventListener("change", plot);
$("lang-select").addEventListener("change", (e) => {
  document.cookie = `isoedge_lang=${encodeURIComponent(e.target.value)}; path=/; max-age=31536000; SameSite=Strict`;
  location.reload();
});
fetch(`/api/i18n?lang=${encodeURIComponent(I18N.lang)}`).then((r) => r.json())
  .then((c) => { I18N.messages = c.messages || {}; })
  .catch(() => {})
  .finally(() => { refresh(); setInterval(refresh, 3000); });
