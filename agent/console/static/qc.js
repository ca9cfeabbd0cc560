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
  stateOrder: answerOrder(),  // /api/qc/state requests (answers may arrive out of order)
  simulatorActed: 0,   // requests up to this one were asked before the panel's last action
};

function releaseText(release) {
  return { released: _("released"), on_hold: _("ON HOLD") }[release] || release;
}
function testText(test) {
  return { background: _("Background"), constancy: _("Constancy"), accuracy: _("Accuracy"),
    geometry: _("Geometry"), linearity: _("Linearity (decay)") }[test] || test;
}
function meaningText(meaning) {
  return { performed: _("performed"), reviewed: _("reviewed"), approved: _("approved"),
    released: _("released"), rejected: _("rejected") }[meaning] || meaning;
}
function resultText(result) {
  return { pass: _("pass"), action: _("action"), fail: _("fail") }[result] || result;
}

// A message the agent sent as [catalog id, parameters]: codes and times shown as people read them.
function agentText(pair, fallback) {
  if (!pair || !pair[0]) return fallback || "";
  const params = { ...(pair[1] || {}) };
  if (params.test) params.test = testText(params.test);
  if (params.result) params.result = resultText(params.result);
  if (params.time) params.time = fmtTime(params.time);
  if (params.summary && typeof params.summary === "object") params.summary = msgText(params.summary);
  return _(pair[0], params);
}

function releaseReason(s) {
  return s.reasons ? s.reasons.map((r) => agentText(r)).join("; ") : s.reason;
}

// An activity to the calibrators' resolution, 0.001 MBq (as on the PDF records).
function fmtMbq(v, u) {
  if (v === null || v === undefined) return "—";
  const text = fmtValue(v, 0.001);
  return u === null || u === undefined ? text : `${text} ± ${fmtNumber(String(Number(u.toPrecision(2))))}`;
}

function fmtPct(v) {
  if (v === null || v === undefined) return "—";
  const r = Math.round(v * 100) / 100 || 0;  // no "-0.00"
  return `${r >= 0 ? "+" : ""}${fmtNumber(r.toFixed(2))} %`;
}

function resultPill(result) {
  if (!result) return "";
  const cls = result === "pass" ? "ok" : result === "action" ? "warning" : "critical";
  return pill(resultText(result), cls, "result");
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
      title: `${releaseReason(s)} (${_("since {time}", { time: fmtTime(s.since) })})` },
    `${device} `, pill(releaseText(s.release), s.release === "released" ? "ok" : "critical",
      "release-state"),
    el("span", { class: "release-since small" }, ` ${_("since {time}", { time: fmtTime(s.since) })}`),
    s.release === "released" ? null : el("span", { class: "release-reason small" }, ` — ${shorten(releaseReason(s), 90)}`))));
  bar.hidden = items.length === 0;
  renderReleasePanel();
}

function renderReleasePanel() {
  const box = $("#qc-release");
  const s = qc.calibrators[qc.device];
  if (!s) { box.replaceChildren(el("p", { class: "muted" }, _("No calibrator with a QC programme."))); return; }
  const due = Object.entries(s.due || {}).map(([test, t]) =>
    el("li", {}, _("{test}: due {time}", { test: testText(test), time: fmtTime(t) })));
  box.className = `release-panel ${s.release}`;
  box.replaceChildren(...[

    el("div", { class: "release-head" }, `${qc.device}: `,
      pill(releaseText(s.release), s.release === "released" ? "ok" : "critical", "release-state"),
      el("span", { class: "muted" }, ` ${_("since {time}", { time: fmtTime(s.since) })} (${fmtUtc(s.since)})`)),
    el("div", { class: "release-reason" }, releaseReason(s)),
    s.release === "released" ? null
      : el("div", { class: "error" }, _("Not for patient doses until the tests pass and are signed.")),
    due.length ? el("ul", { class: "due small" }, ...due) : null].filter(Boolean));
}

// ------------------------------------------------------------------ tests
async function loadQCState() {
  // An answer older than the one shown is dropped; the simulator in an answer asked before the
  // panel's last action is older than what that action showed, so the page keeps the latter
  // (otherwise a reload still in flight puts the sample just taken out back in the chamber).
  const asked = qc.stateOrder.ask();
  let state;
  try {
    state = await api("/api/qc/state");
  } catch (error) { console.warn("qc", error); return; }
  if (!qc.stateOrder.show(asked)) return;
  if (asked <= qc.simulatorActed && qc.state) state.simulator = qc.state.simulator;
  qc.state = state;
  qc.may = qc.state.may;
  qc.timezone = qc.state.timezone;
  const select = $("#qc-device");
  const devices = qc.state.calibrators.map((c) => c.device);
  if (devices.join() !== qc.devices.join()) {
    qc.devices = devices;
    select.replaceChildren(...devices.map((d) => el("option", { value: d }, d)));
    const rxDevice = $("#rx-device");
    rxDevice.replaceChildren(el("option", { value: "" }, _("any")),
      ...devices.map((d) => el("option", { value: d }, d)));
  }
  if (!qc.device || !devices.includes(qc.device)) qc.device = devices[0] || null;
  select.value = qc.device || "";
  for (const c of qc.state.calibrators) qc.calibrators[c.device] = c.release;
  renderReleaseBar();
  const cal = qc.state.calibrators.find((c) => c.device === qc.device);
  renderStart(cal);
  renderSimulator((qc.state.simulator || {})[qc.device]);
  // Show the newest run of this calibrator that is still of interest.
  const current = cal && cal.runs.find((r) => ["running", "completed", "signing"].includes(r.state));
  if (current) showRun(current);
  else if (qc.run && qc.run.device === qc.device && qc.run.state === "signed") showRun(qc.run);
  else hideRun();
}

// The demo's simulated calibrator (absent on a real site: the server sends no simulator).
function renderSimulator(sim) {
  const panel = $("#sim-panel");
  panel.hidden = !sim;
  if (!sim) return;
  panel.dataset.sample = sim.sample || "";
  panel.dataset.setting = sim.setting || "";
  $("#sim-state").textContent = sim.sample
    ? _("In the chamber: {nuclide}, {activity} MBq; setting {setting}",
      { nuclide: sim.sample, activity: fmtMbq(sim.activity_mbq), setting: sim.setting || "—" })
    : _("The chamber is empty; setting {setting}", { setting: sim.setting || "—" });
  // A redraw keeps the setting the user is choosing (the state is reloaded every few seconds).
  const was = $("#sim-setting") ? $("#sim-setting").value : null;
  const chosen = sim.settings.includes(was) && was !== panel.dataset.shown ? was : sim.setting;
  panel.dataset.shown = sim.setting || "";
  const setting = el("select", { id: "sim-setting" },
    ...sim.settings.map((n) => el("option", { value: n, selected: n === chosen }, n)));
  const act = (action, extra) => () => simulatorAct(action, extra);
  const disabled = !qc.may.performed;
  $("#sim-actions").replaceChildren(
    el("button", { type: "button", "data-action": "empty", disabled, onclick: act("empty") },
      _("Empty the chamber")),
    ...sim.sources.map((s) => el("button", { type: "button", "data-action": "place", "data-source": s.id,
      disabled, onclick: act("place", { source: s.id }) },
    _("Place {source} ({nuclide})", { source: s.id, nuclide: s.nuclide }))),
    el("button", { type: "button", "data-action": "vial", disabled, onclick: act("vial") },
      _("Put the {nuclide} vial back", { nuclide: sim.vial })),
    sim.linearity ? el("button", { type: "button", "data-action": "linearity", disabled, onclick: act("linearity") },
      _("Place a linearity sample ({nuclide}, {activity} MBq, time ×{scale})", { nuclide: sim.linearity.nuclide,
        activity: fmtMbq(sim.linearity.activity_mbq), scale: fmtNumber(String(sim.linearity.time_scale)) })) : null,
    el("label", {}, _("Setting"), " ", setting),
    el("button", { type: "button", "data-action": "setting", disabled,
      onclick: () => simulatorAct("setting", { nuclide: $("#sim-setting").value }) }, _("Select setting")));
}

async function simulatorAct(action, extra) {
  const errorBox = $("#sim-error");
  errorBox.hidden = true;
  try {
    const data = await api("/api/demo/simulator", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ device: qc.device, action, ...(extra || {}) }),
    });
    if (qc.state && qc.state.simulator) qc.state.simulator[qc.device] = data.simulator;
    qc.simulatorActed = qc.stateOrder.asked;
    renderSimulator(data.simulator);
  } catch (error) {
    errorBox.textContent = _("Not done: {reason}", { reason: error.message });
    errorBox.hidden = false;
  }
}

function renderStart(cal) {
  const box = $("#qc-start");
  if (!cal) { box.replaceChildren(); return; }
  const busy = cal.runs.some((r) => r.state === "running" && r.test !== "linearity");
  box.replaceChildren(...cal.tests.map((test) => el("button", {
    type: "button", class: `start-test${cal.daily.includes(test) ? " daily" : ""}`,
    "data-test": test, disabled: !qc.may.performed || (busy && test !== "linearity"),
    title: cal.daily.includes(test) ? _("daily test") : "",
    onclick: () => startTest(test),
  }, cal.daily.includes(test) ? _("{test} (daily)", { test: testText(test) }) : testText(test))));
}

function simulatedScale(test) {
  const sim = ((qc.state || {}).simulator || {})[qc.device];
  return test === "linearity" && sim && sim.linearity ? { time_scale: sim.linearity.time_scale } : {};
}

async function startTest(test) {
  const errorBox = $("#qc-start-error");
  errorBox.hidden = true;
  try {
    const data = await api("/api/qc/runs", {
      method: "POST", headers: { "Content-Type": "application/json" },
      // The demo's linearity sample decays time-scaled: the run is told the same scale.
      body: JSON.stringify({ device: qc.device, test, ...simulatedScale(test) }),
    });
    showRun(data.run);
    loadQCState();
  } catch (error) {
    errorBox.textContent = _("Not started: {reason}", { reason: error.message });
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
    _("{test} on {device}, started {time} by {user}", { test: testText(run.test), device: run.device,
      time: fmtTime(run.started), user: run.started_by });
  $("#qc-steps tbody").replaceChildren(...run.steps.map((s) => el("tr",
    { "data-step": s.index, "data-state": s.state, class: `step ${s.state}` },
    el("td", {}, s.index),
    el("td", { class: "instruction", "data-instruction": s.instruction }, agentText(s.instruction_i18n, s.instruction),
      s.state === "active" && s.confirm && !s.confirmed_at && run.state === "running"
        ? el("div", { class: "step-go" },
          el("button", { type: "button", class: "step-confirm", "data-step": s.index,
            disabled: !qc.may.performed, onclick: () => confirmStep(run, s.index) }, _(s.confirm)),
          el("div", { class: "muted small" }, _("IsoEdge measures once you confirm.")))
        : s.state === "active" ? el("div", { class: "muted small" },
          _("waiting for {n} stable readings on the {setting} setting…",
            { n: run.settle_readings, setting: s.setting || _("right") })) : null),
    el("td", {}, s.setting || s.container || ""),
    el("td", { class: "num expected" }, s.kind === "background" ? `≤ ${fmtValue((run.tolerance || {}).max_mbq)}`
      : fmtMbq(s.expected_mbq, s.uncertainty_mbq)),
    el("td", { class: "seen" }, s.seen_mbq === null || s.seen_mbq === undefined ? "—"
      : `${s.seen_setting || "?"} · ${fmtMbq(s.seen_mbq)} ${_("MBq")}`),
    el("td", { class: "num measured" }, el("span", { class: "value" }, fmtMbq(s.measured_mbq)),
      s.readings.length ? el("div", { class: "muted small" }, _("{n} readings", { n: s.readings.length })) : null),
    el("td", { class: "num deviation" }, fmtPct(s.deviation_pct)),
    el("td", { class: "step-result" }, resultPill(s.result)))));
  const box = $("#qc-run-result");
  box.hidden = !run.result;
  if (run.result) {
    const tol = run.tolerance || {};
    const band = tol.action_pct !== undefined && tol.action_pct !== null
      ? _("pass within ±{action} %, action to ±{fail} %, fail beyond ({basis})",
        { action: fmtNumber(tol.action_pct), fail: fmtNumber(tol.fail_pct), basis: tol.basis })
      : tol.basis || "";
    box.className = `run-result ${run.result}`;
    box.replaceChildren(
      el("div", {}, _("Result"), " ", resultPill(run.result), " ",
        el("span", { class: "run-state" }, run.state === "signed" ? _("signed") : _("awaiting your signature"))),
      el("div", { class: "run-summary" }, msgText(run.summary)),
      el("div", { class: "muted small" }, band));
  }
  $("#qc-sign").hidden = !(run.state === "completed" && qc.may.performed);
  $("#qc-finish").hidden = !(run.test === "linearity" && run.state === "running");
  $("#qc-cancel").hidden = !["running", "completed"].includes(run.state);
}

async function confirmStep(run, index) {
  const errorBox = $("#qc-start-error");
  errorBox.hidden = true;
  try {
    const data = await api(`/api/qc/runs/${encodeURIComponent(run.id)}/steps/${index}/confirm`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
    });
    showRun(data.run);
  } catch (error) {
    errorBox.textContent = _("Not confirmed: {reason}", { reason: error.message });
    errorBox.hidden = false;
  }
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
    title: _("Sign QC test"),
    what: _("{test} on {device}: {summary}", { test: testText(run.test), device: run.device, summary: msgText(run.summary) }),
    meaning: "performed",
    comment: true,  // why a test failed, what was done: signed with the record
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

function cancelRun() {
  $("#cancel-reason").value = "";
  $("#cancel-error").hidden = true;
  $("#cancel-dialog").showModal();
  $("#cancel-reason").focus();
}

async function submitCancel(event) {
  event.preventDefault();
  const reason = $("#cancel-reason").value.trim();
  const errorBox = $("#cancel-error");
  if (!reason) { errorBox.textContent = _("A reason is required."); errorBox.hidden = false; return; }
  try {
    await api(`/api/qc/runs/${encodeURIComponent(qc.run.id)}/cancel`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ reason }),
    });
  } catch (error) {
    errorBox.textContent = _("Not cancelled: {reason}", { reason: error.message });
    errorBox.hidden = false;
    return;
  }
  $("#cancel-dialog").close();
  hideRun();
  loadQCState();
}

async function finishRun() {
  const errorBox = $("#qc-start-error");
  errorBox.hidden = true;
  try {
    const data = await api(`/api/qc/runs/${encodeURIComponent(qc.run.id)}/finish`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
    });
    showRun(data.run);
  } catch (error) {
    errorBox.textContent = _("Not analysed: {reason}", { reason: error.message });
    errorBox.hidden = false;
  }
}

// --------------------------------------------------------------- signing
function openSign(spec) {
  qc.sign = spec;
  $("#sign-title").textContent = spec.title;
  $("#sign-what").textContent = spec.what;
  $("#sign-meaning").textContent = meaningText(spec.meaning);
  $("#sign-meaning-label").hidden = !spec.meanings;
  // One place for the meaning: the fixed text, or the choice (review or approval).
  for (const node of document.querySelectorAll(".sign-meaning-row")) node.hidden = Boolean(spec.meanings);
  if (spec.meanings) {
    const select = $("#sign-meaning-select");
    select.replaceChildren(...spec.meanings.map((m) => el("option", { value: m }, meaningText(m))));
    select.value = spec.meaning;
    $("#sign-meaning").textContent = meaningText(select.value);
  }
  $("#sign-name").textContent = qc.me && qc.me.authenticated
    ? `${qc.me.full_name} (${qc.me.name}, ${roleText(qc.me.role)})` : _("(type a configured user name)");
  $("#sign-time").textContent = _("at signing, in site time ({zone}) and UTC", { zone: I18N.zone.name });
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
    errorBox.textContent = _("Enter your password to sign.");
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
    errorBox.textContent = _("Not signed: {reason}", { reason: error.message });
    errorBox.hidden = false;
    $("#sign-password").value = "";
  } finally {
    $("#sign-submit").disabled = false;
  }
}

// ---------------------------------------------------------------- records
function signatureList(record) {
  const all = [];
  for (const s of record.signatures || []) all.push([s, record.comment || ""]);
  for (const review of record.reviewed_by || []) {
    for (const s of review.signatures || []) all.push([s, review.comment || ""]);
  }
  return el("ul", { class: "signatures" }, ...all.map(([s, comment]) => el("li",
    { class: "signature", "data-meaning": s.meaning },
    el("strong", {}, meaningText(s.meaning)), ` ${_("by {name} ({role})", { name: s.name, role: roleText(s.role) })} `,
    el("div", { class: "muted small" }, `${fmtTime(s.t)} · ${fmtUtc(s.t)}`),
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
          ? _("empty chamber {measured} MBq (limit {limit} MBq)",
            { measured: fmtMbq(s.measured_mbq), limit: fmtValue((r.tolerance || {}).max_mbq) })
          : _("{setting}: {measured} vs {expected} MBq ({deviation})", { setting: s.setting || s.container || s.kind,
            measured: fmtMbq(s.measured_mbq), expected: fmtMbq(s.expected_mbq, s.uncertainty_mbq), deviation: fmtPct(s.deviation_pct) })))
        .join("; ");
      return el("tr", { "data-record": r.id, "data-test": r.test, "data-result": r.result },
        el("td", { class: "nowrap" }, fmtTime(r.t),
          el("div", { class: "muted small" }, fmtUtc(r.t))),
        el("td", { class: "nowrap" }, testText(r.test)),
        el("td", {}, resultPill(r.result)),
        el("td", { class: "num nowrap" }, fmtPct(r.deviation_pct)),
        el("td", { class: "small" }, summary),
        el("td", {}, signatureList(r)),
        el("td", {}, mayReview ? el("button", { type: "button", class: "review",
          onclick: () => reviewRecord(r) }, _("Review / approve…")) : null));
    }));
  } catch (error) { console.warn("records", error); }
  loadCharts();
}

function reviewRecord(record) {
  const meanings = [];
  if (qc.may.reviewed) meanings.push("reviewed");
  if (qc.may.approved) meanings.push("approved");
  openSign({
    title: _("Review QC record"),
    what: _("{test} on {device}, {time}, result {result}", { test: testText(record.test),
      device: record.device, time: fmtTime(record.t), result: resultText(record.result) }),
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
    tip.textContent = `${fmtTime(p.t)}: ${fmtPct(p.deviation_pct)} (${resultText(p.result)})`;
    dot.append(tip);
    root.append(dot);
  });
  for (const [t, anchor] of [[t0, "start"], [t1, "end"]]) {
    const label = svg("text", { x: x(t), y: H - 8, "text-anchor": anchor });
    label.textContent = fmtTime(t / 1000, { short: true });
    root.append(label);
  }
  const sd = series.sd === null || series.sd === undefined ? _("SD: needs 3 points")
    : _("mean {mean}, ±2 SD {low} … {high}", { mean: fmtPct(series.mean),
      low: fmtPct(series.limits_2sd[0]), high: fmtPct(series.limits_2sd[1]) });
  return el("div", { class: "chart qc-chart", "data-setting": series.setting },
    el("div", { class: "title" }, _("{setting} setting — tests: {n} — {sd}", { setting: series.setting, n: series.points.length, sd })), root);
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
    label.textContent = 10 ** d >= 1000 ? `${axisLabel(10 ** d / 1000)} ${_("GBq")}` : `${axisLabel(10 ** d)} ${_("MBq")}`;
    root.append(label);
  }
  root.append(svg("polyline", { class: "fit", points: pts.map((p) => `${x(p.elapsed_h).toFixed(1)},${y(p.fit_mbq).toFixed(1)}`).join(" ") }));
  for (const p of pts) {
    root.append(svg("circle", { cx: x(p.elapsed_h), cy: y(p.measured_mbq), r: 3.5, class: `point ${p.result}` }));
  }
  const x0 = svg("text", { x: L, y: H - 8, "text-anchor": "start" });
  x0.textContent = _("{n} h", { n: 0 });
  root.append(x0);
  const xl = svg("text", { x: W - R, y: H - 8, "text-anchor": "end" });
  xl.textContent = _("{n} h", { n: axisLabel(h1) });
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
    el("div", { class: "title" }, _("{nuclide}: points: {n}, fitted T½ {fit} h vs table {table} h ({deviation})", {
      nuclide: lin.nuclide, n: pts.length, fit: fmtNumber(lin.half_life_fit_h.toFixed(3)),
      table: fmtNumber(lin.half_life_table_h.toFixed(3)), deviation: fmtPct(lin.half_life_deviation_pct) }), " — ", resultPill(lin.result)),
    root, el("div", { class: "title" }, _("residuals from the fit (%)")), res,
    lin.failing_points.length ? el("div", { class: "error small" }, _("Outside tolerance: {points}", { points: lin.failing_points.join("; ") })) : null);
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
      box.replaceChildren(el("p", { class: "muted" }, _("No constancy record yet.")));
    }
    const lbox = $("#qc-linearity-chart");
    lbox.replaceChildren(data.linearity ? linearityChart(data.linearity)
      : el("p", { class: "muted" }, _("No linearity record yet.")));
  } catch (error) { console.warn("charts", error); }
}

function updateReportLink() {
  const params = new URLSearchParams({ kind: $("#qc-report-kind").value, device: qc.device || "" });
  if ($("#qc-report-date").value) params.set("date", $("#qc-report-date").value);
  $("#qc-report").href = `/api/qc/report.pdf?${params}`;
}

// The report is fetched, not followed: a refusal (no linearity record yet, a bad day) is said
// on the page instead of a download that silently fails.
async function downloadReport(event) {
  event.preventDefault();
  updateReportLink();
  const errorBox = $("#qc-report-error");
  errorBox.hidden = true;
  try {
    const response = await fetch($("#qc-report").href, { credentials: "same-origin" });
    if (!response.ok) {
      const type = response.headers.get("Content-Type") || "";
      const body = type.includes("application/json") ? await response.json() : null;
      throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
    }
    const found = /filename="?([^";]+)"?/.exec(response.headers.get("Content-Disposition") || "");
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", { href: url, download: found ? found[1] : "qc-report.pdf", hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (error) {
    errorBox.textContent = _("Not done: {reason}", { reason: error.message });
    errorBox.hidden = false;
  }
}

// ----------------------------------------------------------- audit review
function reviewAudit() {
  const since = localToUtc($("#audit-since").value);
  const until = localToUtc($("#audit-until").value) || new Date().toISOString();
  const note = $("#audit-review-note");
  note.hidden = Boolean(since);
  note.textContent = since ? "" : _("Choose the start of the range to review.");
  if (!since) return;
  openSign({
    title: _("Review audit trail"),
    what: _("Audit trail from {since} to {until}, as filtered", { since: fmtTime(since), until: fmtTime(until) }),
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
  return siteInput(Date.parse(iso));
}

async function loadPrescriptions() {
  try {
    const data = await api("/api/prescriptions");
    const mayArm = qc.may.performed;
    $("#rx-table tbody").replaceChildren(...data.prescriptions.map((rx) => {
      const last = rx.result;
      // A measurement on a held calibrator is not a pass, whatever its activity.
      const lastDispensed = data.dispensing.filter((d) => d.prescription === rx.id).slice(-1)[0];
      const heldDose = lastDispensed && lastDispensed.calibrator_release === "on_hold";
      const device = rx.device || qc.device;
      const cal = qc.calibrators[device];
      const held = cal && cal.release !== "released";
      // The site may allow one dose on a held calibrator after a signed override with a reason.
      const override = Boolean(held && qc.state && qc.state.held_override);
      return el("tr", { "data-rx": rx.id },
        el("td", {}, rx.id, rx.note ? el("div", { class: "muted small" }, rx.note) : null),
        el("td", {}, rx.nuclide),
        el("td", { class: "num" }, fmtMbq(rx.activity_mbq)),
        el("td", {}, fmtTime(rx.scheduled)),
        el("td", {}, rx.device || _("any")),
        el("td", { class: "small" }, rx.origin),
        el("td", { class: "rx-last" }, heldDose ? heldPill(lastDispensed)
          : last ? resultPill(last.result) : "—",
          last ? el("div", { class: "muted small" }, `${last.detail} (${fmtPct(last.deviation_pct)})`) : null),
        el("td", {},
          qc.may.prescribe && !rx.origin.startsWith("config:")
            ? el("button", { type: "button", class: "rx-edit", onclick: () => editRx(rx) }, _("Change")) : null,
          mayArm ? el("button", { type: "button", class: override ? "rx-arm rx-override" : "rx-arm",
            onclick: () => (override ? overrideRx(rx, device) : armRx(rx)),
            disabled: Boolean(held) && !override,
            title: held ? _("{device} is ON HOLD: measure this dose on a released calibrator", { device }) : "",
          }, override ? _("Override the hold…") : _("Measure now")) : null,
          mayArm && held ? el("div", { class: "error small rx-held" },
            _("{device} is ON HOLD: measure this dose on a released calibrator", { device })) : null,
          qc.may.prescribe && !rx.origin.startsWith("config:")
            ? el("button", { type: "button", class: "rx-remove", onclick: () => removeRx(rx) }, _("Withdraw")) : null));
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
      el("td", {}, resultText(d.result)),
      el("td", { class: "dispensing-release" }, d.calibrator_release === "on_hold"
        ? heldPill(d) : pill(releaseText(d.calibrator_release || "—"), d.calibrator_release === "released" ? "ok" : "")),
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
  $("#rx-activity").value = fmtNumber(String(rx.activity_mbq));
  $("#rx-unit").value = "MBq";
  $("#rx-scheduled").value = toLocalInput(rx.scheduled);
  $("#rx-device").value = rx.device || "";
  $("#rx-note").value = rx.note || "";
  $("#rx-reason").value = "";
  $("#rx-save").textContent = _("Save change");
  $("#rx-new").hidden = false;
  rxError("");
  $("#rx-reason").focus();
}

function resetRxForm() {
  qc.rxEditing = null;
  $("#rx-confirm-row").hidden = true;
  $("#rx-form").reset();
  $("#rx-id").readOnly = false;
  $("#rx-save").textContent = _("Add prescription");
  $("#rx-new").hidden = true;
}

async function saveRx(event) {
  event.preventDefault();
  const scheduled = localToUtc($("#rx-scheduled").value);
  const body = {
    id: $("#rx-id").value.trim(), nuclide: $("#rx-nuclide").value.trim(),
    activity: parseDecimal($("#rx-activity").value), unit: $("#rx-unit").value, scheduled,
    device: $("#rx-device").value || null, note: $("#rx-note").value.trim(),
    reason: $("#rx-reason").value.trim(),
  };
  if (!body.id || !body.nuclide || !scheduled || !(body.activity > 0)) {
    rxError(_("Order id, nuclide, a positive activity and the scheduled time are required."));
    return;
  }
  if (qc.rxEditing && !body.reason) { rxError(_("A change needs a reason.")); return; }
  if (!$("#rx-confirm-row").hidden && $("#rx-confirm").checked) {
    // The person confirmed an activity outside the plausible range: the reason is audited.
    body.confirm_implausible = true;
    body.confirm_reason = $("#rx-confirm-reason").value.trim();
    if (!body.confirm_reason) { rxError(_("Type why this activity is right.")); return; }
  }
  try {
    const path = qc.rxEditing ? `/api/prescriptions/${encodeURIComponent(qc.rxEditing)}` : "/api/prescriptions";
    await api(path, { method: qc.rxEditing ? "PUT" : "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    rxError("");
    resetRxForm();
    loadPrescriptions();
  } catch (error) {
    if (error.code === "implausible_activity") {
      $("#rx-confirm-row").hidden = false;
      $("#rx-confirm").checked = false;
      $("#rx-confirm-reason").focus();
    }
    rxError(_("Not saved: {reason}", { reason: error.message }));
  }
}

// A dose measured on a held calibrator: not for patient use, or used by a signed override.
function heldPill(d) {
  if (!d.held_override) return pill(_("ON HOLD — not for patient use"), "critical");
  return el("span", {}, pill(_("ON HOLD — override"), "warning"),
    el("div", { class: "muted small held-override" }, _("signed by {name}: {reason}",
      { name: d.held_override.name || d.held_override.by, reason: d.held_override.reason })));
}

// Measure on a held calibrator by a signed decision (the site allows it: `[qc] held_override`).
function overrideRx(rx, device) {
  openSign({
    title: _("Override the hold"),
    what: _("{device} is ON HOLD. Measure {id} on it all the same: type the reason; it is signed and recorded with the dose.",
      { device, id: rx.id }),
    meaning: "performed",
    comment: true,
    submit: async (body) => {
      if (!body.comment) throw new Error(_("a reason is required to override the hold"));
      await api(`/api/prescriptions/${encodeURIComponent(rx.id)}/arm`, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ device, override: { reason: body.comment, password: body.password } }),
      });
      rxError("");
      loadPrescriptions();
    },
  });
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
  } catch (error) { rxError(_("Not armed: {reason}", { reason: error.message })); }
}

async function removeRx(rx) {
  const reason = $("#rx-reason").value.trim();
  if (!reason) { rxError(_("Type the reason for withdrawing {id} in \"Reason\", then Withdraw.", { id: rx.id })); return; }
  try {
    await api(`/api/prescriptions/${encodeURIComponent(rx.id)}`, {
      method: "DELETE", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ reason }),
    });
    resetRxForm();
    loadPrescriptions();
  } catch (error) { rxError(_("Not withdrawn: {reason}", { reason: error.message })); }
}

// -------------------------------------------------------------------- hooks
window.IsoQC = {
  boot(initial) {
    qc.me = initial.me;
    qc.may = initial.me.may || {};
    qc.timezone = initial.timezone || "UTC";
    $("#qc-report-date").value = siteInput(Date.now()).slice(0, 10);
    $("#qc-device").addEventListener("change", (e) => { qc.device = e.target.value; hideRun(); loadQCState(); loadRecords(); updateReportLink(); });
    $("#qc-sign").addEventListener("click", signRun);
    $("#qc-cancel").addEventListener("click", cancelRun);
    $("#cancel-form").addEventListener("submit", submitCancel);
    $("#cancel-back").addEventListener("click", () => $("#cancel-dialog").close());
    $("#qc-finish").addEventListener("click", finishRun);
    $("#sign-form").addEventListener("submit", submitSign);
    $("#sign-cancel").addEventListener("click", () => $("#sign-dialog").close());
    $("#sign-meaning-select").addEventListener("change", (e) => { $("#sign-meaning").textContent = meaningText(e.target.value); });
    $("#qc-report-kind").addEventListener("change", updateReportLink);
    $("#qc-report").addEventListener("click", downloadReport);
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
