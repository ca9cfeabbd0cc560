// IsoEdge console: generator elutions (Tc-99m, Ga-68), waste decay-in-storage and shipments.
// Plain JavaScript on top of console.js (its $, el, pill, api, fmtTime, fmtNumber helpers) and
// qc.js (agentText); values go in with textContent only. A guided run is polled while it runs.
"use strict";

// Everything in its own scope: the console's scripts share one global scope.
(() => {

const gen = {
  shown: null,
  data: null,
  run: null,
  timer: null,
  waste: null,
  wasteRun: null,
  shipments: null,
  receiptRun: null,
  elutionOrder: answerOrder(),  // loadElutions' requests (answers may arrive out of order)
  wasteOrder: answerOrder(),    // loadWaste's
};

const ELUTION_CODES = [
  N_("mo99_over_limit"), N_("aluminium_over_limit"), N_("canister_factor_validation_overdue"),
  N_("identity_half_life_outside_window"), N_("passed"), N_("failed"),
  N_("passed_below_detection_limit"), N_("inconclusive_below_detection_limit"), N_("too_early"),
  N_("inconclusive"), N_("shelf_life"), N_("mo99"), N_("lighter"), N_("equal"), N_("darker"),
];

function codeText(code) { return code ? _(code) : "—"; }

function num(v, digits) {
  if (v === null || v === undefined) return "—";
  return fmtNumber(String(Number(Number(v).toPrecision(digits || 4))));
}

function showError(sel, exc) {
  const box = $(sel);
  if (!exc) { box.hidden = true; return; }
  const body = exc.body;
  box.textContent = body && body._i18n ? _(body._i18n[0], body._i18n[1]) : exc.message;
  box.hidden = false;
}

async function post(path, body) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" },
                     body: JSON.stringify(body || {}) });
}

// ------------------------------------------------------------------ elutions
async function loadElutions() {
  const asked = gen.elutionOrder.ask();
  try {
    const data = await api("/api/elutions");
    if (!gen.elutionOrder.show(asked)) return;
    gen.data = data;
    showError("#elution-error", null);
  } catch (exc) {
    showError("#elution-error", exc);
    return;
  }
  if (!gen.run) gen.run = gen.data.runs.find((r) => ["running", "measured", "completed"].includes(r.state)) || null;
  renderElutions();
}

function renderElutions() {
  const data = gen.data;
  const rows = data.generators.map((g) => el("tr", { "data-generator": g.id },
    el("td", {}, g.id), el("td", {}, g.nuclide), el("td", {}, g.calibrator),
    el("td", {}, g.canister || "—"), el("td", {}, g.lot || "—"),
    el("td", {}, el("button", { type: "button", class: "start-elution",
      onclick: () => startElution(g.id) }, _("Start elution"))),
  ));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colSpan: 6, class: "muted" }, _("No generators configured."))));
  $("#generators-table tbody").replaceChildren(...rows);
  const due = data.reminders.map((r) => el("tr", { "data-eluate": r.eluate_id, class: r.is_due ? "due" : "" },
    el("td", {}, r.eluate_id), el("td", {}, fmtTime(r.due)),
    el("td", {}, r.is_due ? el("button", { type: "button", class: "remeasure",
      onclick: () => remeasure(r.record) }, _("Remeasure now")) : pill(_("not yet"), "muted")),
  ));
  $("#ge68-reminders").hidden = !due.length;
  $("#ge68-table tbody").replaceChildren(...due);
  const records = data.records.filter((r) => r.part !== "generator").map((r) => el("tr", { "data-record": r.id, "data-eluate": r.eluate_id },
    el("td", {}, r.eluate_id), el("td", {}, r.generator_id), el("td", {}, fmtTime(r.elution_time)),
    el("td", {}, r.part === "ge68" ? _("Ge-68 remeasurement") : r.nuclide),
    el("td", { class: "num" }, num(r.tc99m_mbq ?? r.ga68_mbq ?? r.remeasured_mbq)),
    el("td", { class: "num" }, r.part === "ge68" ? `${num(r.ge68_percent, 3)} %` : num(r.mo99_ratio_kbq_per_mbq, 3)),
    el("td", {}, r.use_by ? fmtTime(r.use_by) : "—"),
    el("td", { class: "result" }, pill(r.held ? _("held") : codeText(r.result), r.held ? "bad" : "ok")),
    el("td", {}, el("a", { href: `/api/records/report.pdf?id=${encodeURIComponent(r.id)}`, class: "record-pdf" }, _("PDF"))),
  ));
  if (!records.length) records.push(el("tr", {}, el("td", { colSpan: 9, class: "muted" }, _("No elution records yet."))));
  $("#elutions-table tbody").replaceChildren(...records);
  renderRun();
}

function renderRun() {
  const run = gen.run;
  const box = $("#elution-run");
  box.hidden = !run;
  if (!run) return;
  box.dataset.state = run.state;
  box.dataset.run = run.id;
  $("#elution-run-title").textContent = _("Eluate {eluate} of generator {generator}", { eluate: run.eluate_id, generator: run.generator });
  const steps = run.steps.map((s) => el("tr", { "data-step": String(s.index), "data-state": s.state },
    el("td", {}, String(s.index)),
    el("td", { class: "instruction" }, agentText(s.instruction_i18n, "")),
    el("td", {}, s.seen_setting || "—"),
    el("td", { class: "num" }, s.measured !== null ? num(s.measured) : (s.seen_value !== null ? `(${num(s.seen_value)})` : "—")),
    el("td", {}, s.state === "active" && !s.confirmed_at
      ? el("button", { type: "button", class: "confirm-step", onclick: () => confirmElutionStep(s.index) }, _(s.confirm))
      : pill(s.state === "done" ? _("done") : s.state === "active" ? _("measuring") : _("waiting"),
             s.state === "done" ? "ok" : "muted")),
  ));
  $("#elution-steps tbody").replaceChildren(...steps);
  $("#aluminium-form").hidden = !(run.needs_aluminium && ["measured", "completed"].includes(run.state));
  const draft = run.draft;
  const summary = $("#elution-draft");
  summary.hidden = !draft;
  if (draft) {
    const lines = [];
    if (draft.mo99_ratio_kbq_per_mbq !== undefined) {
      lines.push(_("Mo-99/Tc-99m {ratio} kBq/MBq at end of elution (limit {limit})", { ratio: num(draft.mo99_ratio_kbq_per_mbq, 3), limit: num(draft.mo99_limit.ratio_kbq_per_mbq, 3) }));
      lines.push(draft.use_by ? _("Use by {time}", { time: fmtTime(draft.use_by) }) : _("Not usable: over the limit at elution"));
      if (draft.efficiency_pct !== undefined) lines.push(_("Elution efficiency {pct} %", { pct: num(draft.efficiency_pct, 3) }));
    }
    if (draft.half_life_min !== undefined) lines.push(_("Half-life {value} min (window {low}–{high} min)", { value: num(draft.half_life_min, 4), low: num(draft.identity_window_min[0]), high: num(draft.identity_window_min[1]) }));
    if (draft.ge68_percent !== undefined) lines.push(_("Ge-68 {pct} % of the Ga-68 at elution (limit {limit} %): {status}", { pct: num(draft.ge68_percent, 3), limit: num(draft.ge68_limit_pct), status: codeText(draft.ge68_status) }));
    if (draft.held) lines.push(_("Held: {reasons}", { reasons: draft.hold_reasons.map(codeText).join(", ") }));
    summary.replaceChildren(...lines.map((t) => el("p", {}, t)));
    summary.dataset.result = draft.held ? "held" : draft.result;
  }
  $("#elution-sign").hidden = run.state !== "completed";
  if (["running", "measured"].includes(run.state)) schedulePoll();
}

function schedulePoll() {
  clearTimeout(gen.timer);
  gen.timer = setTimeout(async () => {
    if (!gen.run || gen.shown !== "elutions") return;
    try {
      gen.run = (await api(`/api/elutions/runs/${encodeURIComponent(gen.run.id)}`)).run;
    } catch (exc) { showError("#elution-error", exc); return; }
    renderRun();
  }, 700);
}

async function startElution(generator) {
  const volume = parseDecimal($("#elution-volume").value);
  try {
    gen.run = (await post("/api/elutions", { generator, volume_ml: Number.isFinite(volume) ? volume : null })).run;
    showError("#elution-error", null);
  } catch (exc) { showError("#elution-error", exc); return; }
  renderRun();
}

async function remeasure(record) {
  try {
    gen.run = (await post("/api/elutions/remeasure", { record })).run;
    showError("#elution-error", null);
  } catch (exc) { showError("#elution-error", exc); return; }
  renderRun();
}

async function confirmElutionStep(index) {
  try {
    gen.run = (await post(`/api/elutions/runs/${encodeURIComponent(gen.run.id)}/steps/${index}/confirm`)).run;
  } catch (exc) { showError("#elution-error", exc); return; }
  renderRun();
}

async function submitAluminium(event) {
  event.preventDefault();
  const colour = $("#aluminium-colour").value;
  try {
    gen.run = (await post(`/api/elutions/runs/${encodeURIComponent(gen.run.id)}/aluminium`, { colour })).run;
    showError("#elution-error", null);
  } catch (exc) { showError("#elution-error", exc); return; }
  renderRun();
}

async function signElution(event) {
  event.preventDefault();
  const password = $("#elution-password").value;
  try {
    await post(`/api/elutions/runs/${encodeURIComponent(gen.run.id)}/sign`, { password });
    $("#elution-password").value = "";
    gen.run = null;
    showError("#elution-error", null);
  } catch (exc) { showError("#elution-error", exc); return; }
  loadElutions();
}

// ------------------------------------------------------------------ waste and shipments
async function loadWaste() {
  const asked = gen.wasteOrder.ask();
  try {
    const waste = await api("/api/waste");
    const shipments = await api("/api/shipments");
    if (!gen.wasteOrder.show(asked)) return;
    gen.waste = waste;
    gen.shipments = shipments;
    showError("#waste-error", null);
  } catch (exc) { showError("#waste-error", exc); return; }
  renderWaste();
}

function renderWaste() {
  const rows = gen.waste.containers.map((c) => el("tr", { "data-container": c.container_id },
    el("td", {}, c.container_id), el("td", {}, (c.nuclides || []).join(", ")),
    el("td", {}, fmtTime(c.sealed_at)), el("td", {}, fmtTime(c.release_date)),
    el("td", {}, c.survey ? pill(c.survey.released ? _("released") : _("not releasable"), c.survey.released ? "ok" : "bad") : "—"),
    el("td", {}, el("button", { type: "button", class: "start-survey", onclick: () => startSurvey(c.container_id) }, _("Release survey"))),
    el("td", {}, el("a", { href: `/api/records/report.pdf?kind=waste&subject=${encodeURIComponent(c.container_id)}` }, _("PDF"))),
  ));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colSpan: 7, class: "muted" }, _("No containers logged."))));
  $("#waste-table tbody").replaceChildren(...rows);
  renderGuided("#survey-run", gen.wasteRun, "waste/surveys");
  const ships = gen.shipments.shipments.map((s) => el("tr", {},
    el("td", {}, s.shipment_id), el("td", {}, s.batch_id), el("td", {}, s.nuclide),
    el("td", { class: "num" }, num(s.activity_mbq)), el("td", {}, fmtTime(s.reference_time)),
    el("td", {}, s.destination_site)));
  $("#shipments-table tbody").replaceChildren(...ships);
  const receipts = gen.shipments.receipts.map((r) => el("tr", {},
    el("td", {}, r.shipment_id), el("td", {}, r.origin_site), el("td", { class: "num" }, num(r.measured_mbq)),
    el("td", { class: "num" }, num(r.expected_mbq)), el("td", { class: "num" }, `${num(r.difference_pct, 3)} %`),
    el("td", {}, pill(r.within_tolerance ? _("within tolerance") : _("beyond tolerance"), r.within_tolerance ? "ok" : "bad"))));
  $("#receipts-table tbody").replaceChildren(...receipts);
  $("#receipt-device").replaceChildren(...gen.shipments.calibrators.map((d) => el("option", { value: d }, d)));
  renderGuided("#receipt-run", gen.receiptRun, "receipts");
}

function renderGuided(sel, run, base) {
  const box = $(sel);
  box.hidden = !run;
  if (!run) return;
  box.dataset.state = run.state;
  const steps = run.steps.map((s) => el("li", { "data-state": s.state },
    agentText(s.instruction_i18n, ""), " ",
    s.state === "active" && !s.confirmed_at
      ? el("button", { type: "button", onclick: () => confirmGuided(base, run, s.index) }, _(s.confirm))
      : pill(s.state === "done" ? _("done") : _("waiting"), s.state === "done" ? "ok" : "muted")));
  const draft = run.draft;
  const parts = [el("ol", {}, ...steps)];
  if (draft) {
    const text = draft.difference_pct !== undefined
      ? _("Measured {measured} MBq, expected {expected} MBq ({diff} %)", { measured: num(draft.measured_mbq), expected: num(draft.expected_mbq), diff: num(draft.difference_pct, 3) })
      : _("Surface {surface}, background {background}: {verdict}", { surface: num(draft.surface_mean), background: num(draft.background_mean), verdict: draft.released ? _("releasable") : _("not releasable") });
    parts.push(el("p", {}, text));
    const pw = el("input", { type: "password", autocomplete: "current-password", placeholder: _("Password") });
    parts.push(el("form", { onsubmit: (e) => { e.preventDefault(); signGuided(base, run, pw.value); } },
      pw, el("button", { type: "submit" }, _("Sign"))));
  }
  box.replaceChildren(...parts);
  if (run.state === "running") {
    clearTimeout(gen.timer);
    gen.timer = setTimeout(loadWaste, 1000);
  }
}

async function confirmGuided(base, run, index) {
  try {
    const body = await post(`/api/${base}/${encodeURIComponent(run.id)}/steps/${index}/confirm`);
    if (base === "receipts") gen.receiptRun = body.run; else gen.wasteRun = body.run;
  } catch (exc) { showError("#waste-error", exc); return; }
  loadWaste();
}

async function signGuided(base, run, password) {
  try {
    await post(`/api/${base}/${encodeURIComponent(run.id)}/sign`, { password });
    if (base === "receipts") gen.receiptRun = null; else gen.wasteRun = null;
    showError("#waste-error", null);
  } catch (exc) { showError("#waste-error", exc); return; }
  loadWaste();
}

async function startSurvey(container) {
  try {
    gen.wasteRun = (await post("/api/waste/surveys", { container_id: container })).run;
  } catch (exc) { showError("#waste-error", exc); return; }
  loadWaste();
}

function formBody(form) {
  const body = {};
  for (const [k, v] of new FormData(form).entries()) body[k] = v;
  for (const k of ["activity_mbq", "volume_ml"]) {
    if (k in body) body[k] = body[k] === "" ? null : parseDecimal(body[k]);
  }
  for (const k of ["sealed_at", "reference_time"]) {
    if (body[k]) body[k] = siteInputToUtc(body[k]);
  }
  return body;
}

async function submitForm(event, path, after) {
  event.preventDefault();
  try {
    const body = await post(path, formBody(event.target));
    event.target.reset();
    showError("#waste-error", null);
    if (after) after(body);
  } catch (exc) { showError("#waste-error", exc); return; }
  loadWaste();
}

window.IsoGenerators = {
  onTab(name) {
    gen.shown = name;
    if (name === "elutions") loadElutions();
    if (name === "waste") loadWaste();
  },
  onRecord() {
    if (gen.shown === "elutions") loadElutions();
    if (gen.shown === "waste") loadWaste();
  },
};

document.addEventListener("DOMContentLoaded", () => {
  $("#aluminium-form").addEventListener("submit", submitAluminium);
  $("#elution-sign").addEventListener("submit", signElution);
  $("#waste-log-form").addEventListener("submit", (e) => submitForm(e, "/api/waste/containers"));
  $("#shipment-form").addEventListener("submit", (e) => submitForm(e, "/api/shipments"));
  $("#receipt-form").addEventListener("submit", (e) => submitForm(e, "/api/receipts", (b) => { gen.receiptRun = b.run; }));
});
})();
