// IsoEdge console: the QC programme (release state, guided tests, signatures, records,
// control charts, reports) and prescriptions. Plain JavaScript on top of console.js
// (its $, el, svg, pill, api, fmtTime, fmtValue helpers); values go in with textContent only.
"use strict";

const qc = {
  me: null,
  may: {},
  timezone: "UTC",
  calibrators: {},     // device -> release state (from the health snapshot)
  devices: [],
  device: null,
  state: null,         // /api/qc/state
  run: null,           // the run shown
  poll: null,
  sign: null,          // {title, what, meaning, comment, meanings, submit(body)}
  rxEditing: null,
  lastRecordsKey: "",
};

const RELEASE_TEXT = { released: "released", on_hold: "ON HOLD" };
const TEST_TEXT = {
  background: "Background", constancy: "Constancy", accuracy: "Accuracy",
  geometry: "Geometry", linearity: "Linearity (decay)",
};

function fmtMbq(v, u) {
  if (v === null || v === undefined) return "—";
  const text = fmtValue(Number(v.toPrecision(5)));
  return u === null || u === undefined ? text : `${text} ± ${fmtValue(Number(u.toPrecision(2)))}`;
}

function fmtPct(v) {
  if (v === null || v === undefined) return "—";
  const r = Math.round(v * 100) / 100 || 0;  // no "-0.00"
  return `${r >= 0 ? "+" : ""}${r.toFixed(2)} %`;
}

function resultPill(result) {
  if (!result) return "";
  const cls = result === "pass" ? "ok" : result === "action" ? "warning" : "critical";
  return pill(result, cls, "result");
}

function localTime(text) {
  if (!text) return "";
  try {
    return new Date(text).toLocaleString("en-GB", { timeZone: qc.timezone, hour12: false });
  } catch (error) {
    return "";
  }
}

function stamped(local) {
  // The site-time stamp as the record holds it (2026-12-02T00:45:48+01:00).
  return String(local || "").replace("T", " ");
}

function shorten(text, limit) {
  const value = String(text || "");
  return value.length <= limit ? value : `${value.slice(0, limit - 1)}…`;
}

// ---------------------------------------------------------------- release
function renderReleaseBar() {
  const bar = $("#release-bar");
  const items = Object.entries(qc.calibrators).sort(([a], [b]) => a.localeCompare(b));
  bar.replaceChildren(...items.map(([device, s]) => el("span",
    { class: `release ${s.release}`, "data-device": device,
      title: `${s.reason} (since ${fmtTime(s.since)} UTC)` },
    `${device} `, pill(RELEASE_TEXT[s.release] || s.release, s.release === "released" ? "ok" : "critical",
      "release-state"),
    el("span", { class: "release-since small" }, ` since ${fmtTime(s.since)} UTC`),
    s.release === "released" ? null : el("span", { class: "release-reason small" }, ` — ${shorten(s.reason, 90)}`))));
  bar.hidden = items.length === 0;
  renderReleasePanel();
}

function renderReleasePanel() {
  const box = $("#qc-release");
  const s = qc.calibrators[qc.device];
  if (!s) { box.replaceChildren(el("p", { class: "muted" }, "No calibrator with a QC programme.")); return; }
  const due = Object.entries(s.due || {}).map(([test, t]) =>
    el("li", {}, `${TEST_TEXT[test] || test}: due ${fmtTime(t)} UTC (${localTime(t)} ${qc.timezone})`));
  box.className = `release-panel ${s.release}`;
  box.replaceChildren(...[

    el("div", { class: "release-head" }, `${qc.device}: `,
      pill(RELEASE_TEXT[s.release] || s.release, s.release === "released" ? "ok" : "critical", "release-state"),
      el("span", { class: "muted" }, ` since ${fmtTime(s.since)} UTC (${localTime(s.since)} ${qc.timezone})`)),
    el("div", { class: "release-reason" }, s.reason),
    s.release === "released" ? null
      : el("div", { class: "error" }, "Not for patient doses until the tests pass and are signed."),
    due.length ? el("ul", { class: "due small" }, ...due) : null].filter(Boolean));
}

// ------------------------------------------------------------------ tests
async function loadQCState() {
  try {
    qc.state = await api("/api/qc/state");
  } catch (error) { console.warn("qc", error); return; }
  qc.may = qc.state.may;
  qc.timezone = qc.state.timezone;
  const select = $("#qc-device");
  const devices = qc.state.calibrators.map((c) => c.device);
  if (devices.join() !== qc.devices.join()) {
    qc.devices = devices;
    select.replaceChildren(...devices.map((d) => el("option", { value: d }, d)));
    const rxDevice = $("#rx-device");
    rxDevice.replaceChildren(el("option", { value: "" }, "any"),
      ...devices.map((d) => el("option", { value: d }, d)));
  }
  if (!qc.device || !devices.includes(qc.device)) qc.device = devices[0] || null;
  select.value = qc.device || "";
  for (const c of qc.state.calibrators) qc.calibrators[c.device] = c.release;
  renderReleaseBar();
  const cal = qc.state.calibrators.find((c) => c.device === qc.device);
  renderStart(cal);
  // Show the newest run of this calibrator that is still of interest.
  const current = cal && cal.runs.find((r) => ["running", "completed", "signing"].includes(r.state));
  if (current) showRun(current);
  else if (qc.run && qc.run.device === qc.device && qc.run.state === "signed") showRun(qc.run);
  else hideRun();
}

function renderStart(cal) {
  const box = $("#qc-start");
  if (!cal) { box.replaceChildren(); return; }
  const busy = cal.runs.some((r) => r.state === "running" && r.test !== "linearity");
  box.replaceChildren(...cal.tests.map((test) => el("button", {
    type: "button", class: `start-test${cal.daily.includes(test) ? " daily" : ""}`,
    "data-test": test, disabled: !qc.may.performed || (busy && test !== "linearity"),
    title: cal.daily.includes(test) ? "daily test" : "",
    onclick: () => startTest(test),
  }, `${TEST_TEXT[test] || test}${cal.daily.includes(test) ? " (daily)" : ""}`)));
}

async function startTest(test) {
  const errorBox = $("#qc-start-error");
  errorBox.hidden = true;
  try {
    const data = await api("/api/qc/runs", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ device: qc.device, test }),
    });
    showRun(data.run);
    loadQCState();
  } catch (error) {
    errorBox.textContent = `Not started: ${error.message}`;
    errorBox.hidden = false;
  }
}

function hideRun() {
  $("#qc-run").hidden = true;
  qc.run = null;
}

function showRun(run) {
  qc.run = run;
  $("#qc-run").hidden = false;
  $("#qc-run").dataset.state = run.state;
  $("#qc-run").dataset.test = run.test;
  $("#qc-run").dataset.run = run.id;
  $("#qc-run-title").textContent =
    `${TEST_TEXT[run.test] || run.test} on ${run.device}, started ${fmtTime(run.started)} UTC by ${run.started_by}`;
  $("#qc-steps tbody").replaceChildren(...run.steps.map((s) => el("tr",
    { "data-step": s.index, "data-state": s.state, class: `step ${s.state}` },
    el("td", {}, s.index),
    el("td", { class: "instruction" }, s.instruction,
      s.state === "active" ? el("div", { class: "muted small" },
        `waiting for ${run.settle_readings} stable readings on the ${s.setting || "right"} setting…`) : null),
    el("td", {}, s.setting || s.container || ""),
    el("td", { class: "num expected" }, s.kind === "background" ? `≤ ${fmtValue((run.tolerance || {}).max_mbq)}`
      : fmtMbq(s.expected_mbq, s.uncertainty_mbq)),
    el("td", { class: "seen" }, s.seen_mbq === null || s.seen_mbq === undefined ? "—"
      : `${s.seen_setting || "?"} · ${fmtMbq(s.seen_mbq)} MBq`),
    el("td", { class: "num measured" }, el("span", { class: "value" }, fmtMbq(s.measured_mbq)),
      s.readings.length ? el("div", { class: "muted small" }, `${s.readings.length} readings`) : null),
    el("td", { class: "num deviation" }, fmtPct(s.deviation_pct)),
    el("td", { class: "step-result" }, resultPill(s.result)))));
  const box = $("#qc-run-result");
  box.hidden = !run.result;
  if (run.result) {
    const tol = run.tolerance || {};
    const band = tol.action_pct !== undefined && tol.action_pct !== null
      ? `pass within ±${tol.action_pct} %, action to ±${tol.fail_pct} %, fail beyond (${tol.basis})`
      : tol.basis || "";
    box.className = `run-result ${run.result}`;
    box.replaceChildren(
      el("div", {}, "Result ", resultPill(run.result), " ",
        el("span", { class: "run-state" }, run.state === "signed" ? "signed" : "awaiting your signature")),
      el("div", { class: "run-summary" }, run.summary),
      el("div", { class: "muted small" }, band));
  }
  $("#qc-sign").hidden = !(run.state === "completed" && qc.may.performed);
  $("#qc-finish").hidden = !(run.test === "linearity" && run.state === "running");
  $("#qc-cancel").hidden = !["running", "completed"].includes(run.state);
}

async function pollRun() {
  if (!qc.run || !["running", "signing"].includes(qc.run.state)) return;
  try {
    const data = await api(`/api/qc/runs/${encodeURIComponent(qc.run.id)}`);
    const was = qc.run.state;
    showRun(data.run);
    if (was !== data.run.state) loadQCState();
  } catch (error) { console.warn("run", error); }
}

function signRun() {
  const run = qc.run;
  openSign({
    title: "Sign QC test",
    what: `${TEST_TEXT[run.test] || run.test} on ${run.device}: ${run.summary}`,
    meaning: "performed",
    comment: false,
    submit: async (body) => {
      const data = await api(`/api/qc/runs/${encodeURIComponent(run.id)}/sign`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      showRun(data.run);
      await loadQCState();
      await loadRecords();
    },
  });
}

async function cancelRun() {
  const reason = window.prompt("Why is this test cancelled?");
  if (!reason) return;
  try {
    await api(`/api/qc/runs/${encodeURIComponent(qc.run.id)}/cancel`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ reason }),
    });
  } catch (error) { window.alert(error.message); }
  hideRun();
  loadQCState();
}

async function finishRun() {
  try {
    const data = await api(`/api/qc/runs/${encodeURIComponent(qc.run.id)}/finish`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
    });
    showRun(data.run);
  } catch (error) { window.alert(error.message); }
}

// --------------------------------------------------------------- signing
function openSign(spec) {
  qc.sign = spec;
  $("#sign-title").textContent = spec.title;
  $("#sign-what").textContent = spec.what;
  $("#sign-meaning").textContent = spec.meaning;
  $("#sign-meaning-label").hidden = !spec.meanings;
  // One place for the meaning: the fixed text, or the choice (review or approval).
  for (const node of document.querySelectorAll(".sign-meaning-row")) node.hidden = Boolean(spec.meanings);
  if (spec.meanings) {
    const select = $("#sign-meaning-select");
    select.replaceChildren(...spec.meanings.map((m) => el("option", { value: m }, m)));
    select.value = spec.meaning;
    $("#sign-meaning").textContent = select.value;
  }
  $("#sign-name").textContent = qc.me && qc.me.authenticated
    ? `${qc.me.full_name} (${qc.me.name}, ${qc.me.role})` : "(type a configured user name)";
  $("#sign-time").textContent = `at signing, in UTC and site time (${qc.timezone})`;
  $("#sign-comment-label").hidden = !spec.comment;
  $("#sign-comment").value = "";
  $("#sign-password").value = "";
  $("#sign-error").hidden = true;
  $("#sign-dialog").showModal();
  $("#sign-password").focus();
}

async function submitSign(event) {
  event.preventDefault();
  const password = $("#sign-password").value;
  const errorBox = $("#sign-error");
  if (!password) {
    errorBox.textContent = "Enter your password to sign.";
    errorBox.hidden = false;
    return;
  }
  const body = { password };
  if (qc.sign.comment) body.comment = $("#sign-comment").value.trim();
  if (qc.sign.meanings) body.meaning = $("#sign-meaning-select").value;
  $("#sign-submit").disabled = true;
  try {
    await qc.sign.submit(body);
    $("#sign-dialog").close();
  } catch (error) {
    errorBox.textContent = `Not signed: ${error.message}`;
    errorBox.hidden = false;
    $("#sign-password").value = "";
  } finally {
    $("#sign-submit").disabled = false;
  }
}

// ---------------------------------------------------------------- records
function signatureList(record) {
  const all = [];
  for (const s of record.signatures || []) all.push([s, ""]);
  for (const review of record.reviewed_by || []) {
    for (const s of review.signatures || []) all.push([s, review.comment || ""]);
  }
  return el("ul", { class: "signatures" }, ...all.map(([s, comment]) => el("li",
    { class: "signature", "data-meaning": s.meaning },
    el("strong", {}, s.meaning), ` by ${s.name} (${s.role}) `,
    el("div", { class: "muted small" }, `${fmtTime(s.t)} UTC · ${stamped(s.t_local)} ${s.timezone}`),
    comment ? el("div", { class: "muted small" }, `“${comment}”`) : null)));
}

async function loadRecords() {
  if (!qc.device) return;
  try {
    const data = await api(`/api/qc/records?device=${encodeURIComponent(qc.device)}`);
    const key = JSON.stringify([data, qc.may]);
    if (key === qc.lastRecordsKey) return;  // unchanged: keep the table (and its focus)
    qc.lastRecordsKey = key;
    $("#qc-records tbody").replaceChildren(...data.records.slice(0, 50).map((r) => {
      const signers = [r, ...(r.reviewed_by || [])].flatMap((x) => (x.signatures || []).map((s) => s.user));
      const mayReview = (qc.may.reviewed || qc.may.approved) && !signers.includes(qc.me && qc.me.name);
      const summary = (r.steps || []).filter((s) => s.measured_mbq !== null && s.measured_mbq !== undefined)
        .map((s) => (s.kind === "background"
          ? `empty chamber ${fmtMbq(s.measured_mbq)} MBq (limit ${fmtValue((r.tolerance || {}).max_mbq)} MBq)`
          : `${s.setting || s.container || s.kind}: ${fmtMbq(s.measured_mbq)} vs ${fmtMbq(s.expected_mbq, s.uncertainty_mbq)} MBq (${fmtPct(s.deviation_pct)})`))
        .join("; ");
      return el("tr", { "data-record": r.id, "data-test": r.test, "data-result": r.result },
        el("td", { class: "nowrap" }, `${fmtTime(r.t)} UTC`,
          el("div", { class: "muted small" }, `${stamped(r.t_local)} ${r.timezone}`)),
        el("td", { class: "nowrap" }, TEST_TEXT[r.test] || r.test),
        el("td", {}, resultPill(r.result)),
        el("td", { class: "num nowrap" }, fmtPct(r.deviation_pct)),
        el("td", { class: "small" }, summary),
        el("td", {}, signatureList(r)),
        el("td", {}, mayReview ? el("button", { type: "button", class: "review",
          onclick: () => reviewRecord(r) }, "Review / approve…") : null));
    }));
  } catch (error) { console.warn("records", error); }
  loadCharts();
}

function reviewRecord(record) {
  const meanings = [];
  if (qc.may.reviewed) meanings.push("reviewed");
  if (qc.may.approved) meanings.push("approved");
  openSign({
    title: "Review QC record",
    what: `${TEST_TEXT[record.test] || record.test} on ${record.device}, ${fmtTime(record.t)} UTC, result ${record.result}`,
    meaning: meanings[0],
    meanings,
    comment: true,
    submit: async (body) => {
      await api(`/api/qc/records/${encodeURIComponent(record.id)}/review`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      await loadRecords();
    },
  });
}

// ----------------------------------------------------------------- charts
function axisLabel(v) { return String(Number(v.toPrecision(3))); }

function constancyChart(data, series) {
  const W = 560, H = 220, L = 48, R = 12, T = 12, B = 28;
  const fail = data.fail_pct || 10, action = data.action_pct || 5;
  const lim = Math.max(fail * 1.3, ...series.points.map((p) => Math.abs(p.deviation_pct) * 1.1));
  const times = series.points.map((p) => Date.parse(p.t));
  let t0 = Math.min(...times), t1 = Math.max(...times);
  const pad = Math.max((t1 - t0) * 0.06, 30e3);
  t0 -= pad; t1 += pad;
  const x = (t) => L + (W - L - R) * (t - t0) / (t1 - t0);
  const y = (v) => T + (H - T - B) * (lim - v) / (2 * lim);
  const root = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": `constancy ${series.setting}` });
  const band = (from, to, cls) => root.append(svg("rect",
    { x: L, width: W - L - R, y: y(to), height: Math.max(0, y(from) - y(to)), class: cls }));
  band(fail, lim, "band-fail"); band(-lim, -fail, "band-fail");
  band(action, fail, "band-action"); band(-fail, -action, "band-action");
  band(-action, action, "band-pass");
  for (const v of [-fail, -action, 0, action, fail]) {
    root.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: v === 0 ? "zero" : "grid" }));
    const label = svg("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end" });
    label.textContent = `${v > 0 ? "+" : ""}${axisLabel(v)} %`;
    root.append(label);
  }
  if (series.limits_2sd) {
    for (const v of series.limits_2sd) {
      root.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "sd-limit" }));
    }
  }
  const pts = series.points.map((p, i) => `${x(times[i]).toFixed(1)},${y(p.deviation_pct).toFixed(1)}`);
  root.append(svg("polyline", { points: pts.join(" "), class: "series" }));
  series.points.forEach((p, i) => {
    const dot = svg("circle", { cx: x(times[i]), cy: y(p.deviation_pct), r: 4, class: `point ${p.result}` });
    const tip = svg("title", {});
    tip.textContent = `${fmtTime(p.t)} UTC: ${fmtPct(p.deviation_pct)} (${p.result})`;
    dot.append(tip);
    root.append(dot);
  });
  for (const [t, anchor] of [[t0, "start"], [t1, "end"]]) {
    const label = svg("text", { x: x(t), y: H - 8, "text-anchor": anchor });
    label.textContent = `${new Date(t).toISOString().slice(5, 16).replace("T", " ")} UTC`;
    root.append(label);
  }
  const sd = series.sd === null || series.sd === undefined ? "SD: needs 3 points"
    : `mean ${fmtPct(series.mean)}, ±2 SD ${fmtPct(series.limits_2sd[0])} … ${fmtPct(series.limits_2sd[1])}`;
  return el("div", { class: "chart qc-chart", "data-setting": series.setting },
    el("div", { class: "title" }, `${series.setting} setting — ${series.points.length} test${series.points.length === 1 ? "" : "s"} — ${sd}`), root);
}

function linearityChart(lin) {
  const W = 560, H = 240, L = 60, R = 12, T = 12, B = 30;
  const pts = lin.points;
  const hs = pts.map((p) => p.elapsed_h);
  const h1 = Math.max(...hs, 1e-6);
  const logs = pts.flatMap((p) => [Math.log10(p.measured_mbq), Math.log10(p.fit_mbq)]);
  const lo = Math.floor(Math.min(...logs)), hi = Math.ceil(Math.max(...logs));
  const x = (h) => L + (W - L - R) * h / h1;
  const y = (a) => T + (H - T - B) * (hi - Math.log10(a)) / Math.max(hi - lo, 1);
  const root = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "linearity" });
  for (let d = lo; d <= hi; d += 1) {
    root.append(svg("line", { x1: L, x2: W - R, y1: y(10 ** d), y2: y(10 ** d), class: "grid" }));
    const label = svg("text", { x: L - 4, y: y(10 ** d) + 3, "text-anchor": "end" });
    label.textContent = 10 ** d >= 1000 ? `${axisLabel(10 ** d / 1000)} GBq` : `${axisLabel(10 ** d)} MBq`;
    root.append(label);
  }
  root.append(svg("polyline", { class: "fit", points: pts.map((p) => `${x(p.elapsed_h).toFixed(1)},${y(p.fit_mbq).toFixed(1)}`).join(" ") }));
  for (const p of pts) {
    root.append(svg("circle", { cx: x(p.elapsed_h), cy: y(p.measured_mbq), r: 3.5, class: `point ${p.result}` }));
  }
  const x0 = svg("text", { x: L, y: H - 8, "text-anchor": "start" });
  x0.textContent = "0 h";
  root.append(x0);
  const xl = svg("text", { x: W - R, y: H - 8, "text-anchor": "end" });
  xl.textContent = `${axisLabel(h1)} h`;
  root.append(xl);
  // Residuals in %.
  const RH = 120;
  const lim = Math.max(...pts.map((p) => Math.abs(p.deviation_pct)), (lin.tolerance || {}).fail_pct || 5) * 1.2;
  const ry = (v) => T + (RH - T - B) * (lim - v) / (2 * lim);
  const res = svg("svg", { width: W, height: RH, viewBox: `0 0 ${W} ${RH}`, role: "img", "aria-label": "residuals" });
  for (const v of [-lim, 0, lim]) {
    res.append(svg("line", { x1: L, x2: W - R, y1: ry(v), y2: ry(v), class: v === 0 ? "zero" : "grid" }));
    const label = svg("text", { x: L - 4, y: ry(v) + 3, "text-anchor": "end" });
    label.textContent = `${v > 0 ? "+" : ""}${axisLabel(v)} %`;
    res.append(label);
  }
  const tol = lin.tolerance || {};
  for (const [v, cls] of [[tol.action_pct, "band-line action"], [tol.fail_pct, "band-line fail"]]) {
    if (v === undefined || v === null) continue;
    for (const sign of [1, -1]) {
      res.append(svg("line", { x1: L, x2: W - R, y1: ry(sign * v), y2: ry(sign * v), class: cls }));
    }
  }
  for (const p of pts) {
    res.append(svg("circle", { cx: x(p.elapsed_h), cy: ry(p.deviation_pct), r: 3, class: `point ${p.result}` }));
  }
  return el("div", { class: "chart qc-chart linearity", "data-record": lin.record },
    el("div", { class: "title" }, `${lin.nuclide}: ${pts.length} points, fitted T½ ${lin.half_life_fit_h.toFixed(3)} h vs table ${lin.half_life_table_h.toFixed(3)} h (${fmtPct(lin.half_life_deviation_pct)}) — `, resultPill(lin.result)),
    root, el("div", { class: "title" }, "residuals from the fit (%)"), res,
    lin.failing_points.length ? el("div", { class: "error small" }, `Outside tolerance: ${lin.failing_points.join("; ")}`) : null);
}

async function loadCharts() {
  if (!qc.device) return;
  try {
    const data = await api(`/api/qc/charts?device=${encodeURIComponent(qc.device)}`);
    const key = JSON.stringify(data);
    if (key === qc.chartsKey) return;  // unchanged: keep the drawn charts
    qc.chartsKey = key;
    const box = $("#qc-constancy-chart");
    if (data.constancy.series.length) {
      box.replaceChildren(...data.constancy.series.map((s) => constancyChart(data.constancy, s)));
    } else {
      box.replaceChildren(el("p", { class: "muted" }, "No constancy record yet."));
    }
    const lbox = $("#qc-linearity-chart");
    lbox.replaceChildren(data.linearity ? linearityChart(data.linearity)
      : el("p", { class: "muted" }, "No linearity record yet."));
  } catch (error) { console.warn("charts", error); }
}

function updateReportLink() {
  const params = new URLSearchParams({ kind: $("#qc-report-kind").value, device: qc.device || "" });
  if ($("#qc-report-date").value) params.set("date", $("#qc-report-date").value);
  $("#qc-report").href = `/api/qc/report.pdf?${params}`;
}

// ----------------------------------------------------------- audit review
function reviewAudit() {
  const since = localToUtc($("#audit-since").value);
  const until = localToUtc($("#audit-until").value) || new Date().toISOString();
  if (!since) { window.alert("Choose the start of the range to review."); return; }
  openSign({
    title: "Review audit trail",
    what: `Audit trail from ${fmtTime(since)} to ${fmtTime(until)} UTC, as filtered`,
    meaning: "reviewed",
    comment: true,
    submit: async (body) => {
      await api("/api/audit/review", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ ...body, since, until }),
      });
      loadAudit();
    },
  });
}

// ---------------------------------------------------------- prescriptions
function toLocalInput(iso) {
  const d = new Date(iso);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60e3).toISOString().slice(0, 19);
}

async function loadPrescriptions() {
  try {
    const data = await api("/api/prescriptions");
    const mayArm = qc.may.performed;
    $("#rx-table tbody").replaceChildren(...data.prescriptions.map((rx) => {
      const last = rx.result;
      return el("tr", { "data-rx": rx.id },
        el("td", {}, rx.id, rx.note ? el("div", { class: "muted small" }, rx.note) : null),
        el("td", {}, rx.nuclide),
        el("td", { class: "num" }, fmtMbq(rx.activity_mbq)),
        el("td", {}, fmtTime(rx.scheduled)),
        el("td", {}, rx.device || "any"),
        el("td", { class: "small" }, rx.origin),
        el("td", {}, last ? resultPill(last.result) : "—",
          last ? el("div", { class: "muted small" }, `${last.detail} (${fmtPct(last.deviation_pct)})`) : null),
        el("td", {},
          qc.may.prescribe && !rx.origin.startsWith("config:")
            ? el("button", { type: "button", class: "rx-edit", onclick: () => editRx(rx) }, "Change") : null,
          mayArm ? el("button", { type: "button", class: "rx-arm", onclick: () => armRx(rx) }, "Measure now") : null,
          qc.may.prescribe && !rx.origin.startsWith("config:")
            ? el("button", { type: "button", class: "rx-remove", onclick: () => removeRx(rx) }, "Withdraw") : null));
    }));
    $("#dispensing-table tbody").replaceChildren(...data.dispensing.slice().reverse().map((d) => el("tr",
      { "data-dispensing": d.id, "data-rx": d.prescription, class: d.calibrator_release === "on_hold" ? "held" : "" },
      el("td", {}, fmtTime(d.t)),
      el("td", {}, d.prescription),
      el("td", {}, d.device),
      el("td", { class: "num" }, fmtMbq(d.measured_mbq)),
      el("td", { class: "num" }, fmtMbq(d.at_scheduled_mbq)),
      el("td", { class: "num" }, fmtMbq(d.prescribed_mbq)),
      el("td", { class: "num" }, fmtPct(d.deviation_pct)),
      el("td", {}, d.result),
      el("td", { class: "dispensing-release" }, d.calibrator_release === "on_hold"
        ? pill("ON HOLD — not for patient use", "critical") : pill(d.calibrator_release || "—", d.calibrator_release === "released" ? "ok" : "")),
      el("td", {}, d.who))));
  } catch (error) { console.warn("prescriptions", error); }
}

function rxError(text) {
  const box = $("#rx-error");
  box.textContent = text || "";
  box.hidden = !text;
}

function editRx(rx) {
  qc.rxEditing = rx.id;
  $("#rx-id").value = rx.id;
  $("#rx-id").readOnly = true;
  $("#rx-nuclide").value = rx.nuclide;
  $("#rx-activity").value = rx.activity_mbq;
  $("#rx-unit").value = "MBq";
  $("#rx-scheduled").value = toLocalInput(rx.scheduled);
  $("#rx-device").value = rx.device || "";
  $("#rx-note").value = rx.note || "";
  $("#rx-reason").value = "";
  $("#rx-save").textContent = "Save change";
  $("#rx-new").hidden = false;
  rxError("");
  $("#rx-reason").focus();
}

function resetRxForm() {
  qc.rxEditing = null;
  $("#rx-form").reset();
  $("#rx-id").readOnly = false;
  $("#rx-save").textContent = "Add prescription";
  $("#rx-new").hidden = true;
}

async function saveRx(event) {
  event.preventDefault();
  const scheduled = localToUtc($("#rx-scheduled").value);
  const body = {
    id: $("#rx-id").value.trim(), nuclide: $("#rx-nuclide").value.trim(),
    activity: Number($("#rx-activity").value), unit: $("#rx-unit").value, scheduled,
    device: $("#rx-device").value || null, note: $("#rx-note").value.trim(),
    reason: $("#rx-reason").value.trim(),
  };
  if (!body.id || !body.nuclide || !scheduled || !(body.activity > 0)) {
    rxError("Order id, nuclide, a positive activity and the scheduled time are required.");
    return;
  }
  if (qc.rxEditing && !body.reason) { rxError("A change needs a reason."); return; }
  try {
    const path = qc.rxEditing ? `/api/prescriptions/${encodeURIComponent(qc.rxEditing)}` : "/api/prescriptions";
    await api(path, { method: qc.rxEditing ? "PUT" : "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    rxError("");
    resetRxForm();
    loadPrescriptions();
  } catch (error) { rxError(`Not saved: ${error.message}`); }
}

async function armRx(rx) {
  const device = rx.device || qc.device;
  try {
    await api(`/api/prescriptions/${encodeURIComponent(rx.id)}/arm`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ device }),
    });
    rxError("");
    const row = document.querySelector(`#rx-table tr[data-rx="${CSS.escape(rx.id)}"]`);
    if (row) row.classList.add("armed");
  } catch (error) { rxError(`Not armed: ${error.message}`); }
}

async function removeRx(rx) {
  const reason = $("#rx-reason").value.trim();
  if (!reason) { rxError(`Type the reason for withdrawing ${rx.id} in "Reason", then Withdraw.`); return; }
  try {
    await api(`/api/prescriptions/${encodeURIComponent(rx.id)}`, {
      method: "DELETE", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ reason }),
    });
    resetRxForm();
    loadPrescriptions();
  } catch (error) { rxError(`Not withdrawn: ${error.message}`); }
}

// -------------------------------------------------------------------- hooks
window.IsoQC = {
  boot(initial) {
    qc.me = initial.me;
    qc.may = initial.me.may || {};
    qc.timezone = initial.timezone || "UTC";
    $("#qc-report-date").value = new Date().toLocaleDateString("en-CA", { timeZone: qc.timezone });
    $("#qc-device").addEventListener("change", (e) => { qc.device = e.target.value; hideRun(); loadQCState(); loadRecords(); updateReportLink(); });
    $("#qc-sign").addEventListener("click", signRun);
    $("#qc-cancel").addEventListener("click", cancelRun);
    $("#qc-finish").addEventListener("click", finishRun);
    $("#sign-form").addEventListener("submit", submitSign);
    $("#sign-cancel").addEventListener("click", () => $("#sign-dialog").close());
    $("#sign-meaning-select").addEventListener("change", (e) => { $("#sign-meaning").textContent = e.target.value; });
    $("#qc-report-kind").addEventListener("change", updateReportLink);
    $("#qc-report-date").addEventListener("change", updateReportLink);
    $("#audit-review").addEventListener("click", reviewAudit);
    $("#audit-review").hidden = !qc.may.review_audit;
    $("#qc-no-signing").hidden = Boolean(qc.me.authenticated);
    $("#rx-form").addEventListener("submit", saveRx);
    $("#rx-new").addEventListener("click", resetRxForm);
    if (!qc.may.prescribe) for (const input of $("#rx-form").elements) input.disabled = true;
    setInterval(pollRun, 700);
    loadQCState().then(() => { loadRecords(); updateReportLink(); });
  },
  onHealth(snapshot) {
    if (!snapshot.calibrators) return;
    qc.calibrators = snapshot.calibrators;
    renderReleaseBar();
  },
  onTab(name) {
    if (name === "qc") { loadQCState(); loadRecords(); }
    if (name === "prescriptions") loadPrescriptions();
  },
  onRecord() {
    clearTimeout(qc.recordReload);
    qc.recordReload = setTimeout(() => {
      if (currentTab() === "qc") { loadRecords(); loadQCState(); }
      if (currentTab() === "prescriptions") loadPrescriptions();
    }, 200);
  },
};
