// IsoEdge console: the radiopharmacy's records (batches and their release). Plain JavaScript on
// top of console.js (its $, el, pill, api, fmtTime, fmtNumber helpers); values go in with
// textContent only.
"use strict";

const records = {
  shown: false,
  batches: [],
  runs: [],
  doses: [],
  permissions: {},
  poll: null,
  testsFor: null,  // the batch whose release tests are being typed
  order: answerOrder(),  // loadBatches' requests (answers may arrive out of order)
};

function decisionText(decision) {
  return { released: _("released"), rejected: _("rejected"), pending: _("awaiting release") }[decision] || decision;
}

function fmtMbqValue(v) {
  if (v === null || v === undefined) return "—";
  return fmtNumber(String(Number(Number(v).toPrecision(5))));
}

function fmtPercent(v) {
  if (v === null || v === undefined) return "—";
  return `${fmtNumber((Math.round(v * 10) / 10).toFixed(1))} %`;
}

async function loadBatches() {
  const error = $("#batches-error");
  const asked = records.order.ask();
  try {
    const body = await api("/api/batches");
    const doses = (await api("/api/records?kind=dispensing")).records;
    if (!records.order.show(asked)) return;
    records.batches = body.batches;
    records.runs = body.runs || [];
    records.doses = doses;
    records.permissions = body.permissions || {};
    error.hidden = true;
  } catch (exc) {
    error.textContent = exc.message;
    error.hidden = false;
    return;
  }
  renderBatches();
  renderDoses();
  renderDoseForm();
}

function renderDoses() {
  const rows = records.doses.map((d) => el("tr", { "data-dose": d.id },
    el("td", {}, fmtTime(d.measured_at)),
    el("td", {}, d.batch_id),
    el("td", {}, d.patient ? d.patient.hospital_number : "—"),
    el("td", {}, d.prescription_id),
    el("td", { class: "num" }, fmtMbqValue(d.activity_at_scheduled_mbq)),
    el("td", { class: "num" }, fmtPct(d.deviation_pct)),
    el("td", {}, pill(resultText(d.result), d.result === "pass" ? "ok" : "warn")),
    el("td", {}, el("a", { href: `/api/doses/${encodeURIComponent(d.id)}/label.pdf`, class: "dose-label" }, _("Label"))),
  ));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colSpan: 8, class: "muted" }, _("No doses dispensed from batches yet."))));
  $("#doses-table tbody").replaceChildren(...rows);
}

function runStateText(state) {
  return { running: _("synthesis running"), eos: _("end of synthesis: assay the product"),
    assaying: _("assaying the product"), assayed: _("assayed: release tests to sign") }[state] || state;
}

// A refusal (409 batch_not_released, a role, a state) shown in the page, never in an alert().
function showError(box, exc) {
  box.textContent = exc.message;
  box.dataset.code = exc.code || "";
  box.hidden = false;
}

function runActions(run) {
  const cell = el("td", { class: "actions" });
  if (!records.permissions.performed) return cell;
  if (run.state === "eos") {
    const go = el("button", { type: "button", class: "primary batch-assay" }, _("Start the assay"));
    go.title = _("Put the product vial in the calibrator on the {nuclide} setting first.",
      { nuclide: run.nuclide || "" });
    go.addEventListener("click", () => startAssay(run, go));
    cell.append(go);
  } else if (run.state === "assayed") {
    const go = el("button", { type: "button", class: "primary batch-tests" }, _("Release tests"));
    go.addEventListener("click", () => openTests(run));
    cell.append(go);
  }
  return cell;
}

async function startAssay(run, button) {
  const error = $("#batches-error");
  button.disabled = true;
  try {
    await api(`/api/batches/${encodeURIComponent(run.batch_id)}/assay`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
    });
    error.hidden = true;
  } catch (exc) {
    showError(error, exc);
    button.disabled = false;
    return;
  }
  await loadBatches();
}

function testLabel(code) {
  return { appearance: _("Appearance"), ph: _("pH"), rcp: _("Radiochemical purity"),
    residual_solvents: _("Residual solvents"), endotoxin: _("Bacterial endotoxins"),
    filter_integrity: _("Filter integrity"), sterility: _("Sterility") }[code] || code;
}

// The specification beside each field: "4,5 … 8,5", "≤ 410 ppm", "≥ 95 %".
function specText(test) {
  const unit = test.unit ? ` ${test.unit}` : "";
  const n = (v) => fmtNumber(String(v));
  if (test.kind === "range") return `${n(test.low)} … ${n(test.high)}${unit}`;
  if (test.kind === "max") return `≤ ${n(test.high)}${unit}`;
  if (test.kind === "min") return `≥ ${n(test.low)}${unit}`;
  if (test.kind === "text") return test.expect;
  return "";
}

function resultSelect(test) {
  const choices = ["pass", "fail"];
  if (test.pending_allowed) choices.push("pending");
  const select = el("select", { name: `${test.code}.result` },
    el("option", { value: "" }, "—"),
    ...choices.map((c) => el("option", { value: c }, c === "pending" ? _("pending") : resultText(c))));
  return select;
}

function openTests(run) {
  records.testsFor = run;
  const form = $("#batch-tests-form");
  $("#batch-tests-title").textContent = _("Release tests of batch {batch} ({product})",
    { batch: run.batch_id, product: run.product_name });
  const fields = (run.tests || []).map((test) => {
    const label = el("label", { "data-test": test.code }, testLabel(test.code));
    const numeric = ["range", "max", "min"].includes(test.kind);
    if (test.kind === "text") label.append(el("input", { name: `${test.code}.value`, maxlength: "500" }));
    if (numeric) label.append(el("input", { name: `${test.code}.value`, inputmode: "decimal", size: "7" }));
    if (!numeric || test.pending_allowed) label.append(resultSelect(test));
    const spec = specText(test);
    if (spec) label.append(el("span", { class: "spec" }, spec));
    return label;
  });
  $("#batch-tests-fields").replaceChildren(...fields);
  $("#batch-tests-error").hidden = true;
  form.hidden = false;
  form.scrollIntoView({ block: "nearest" });
}

// The typed tests as the API takes them, or an error naming the first field that is not right.
function collectTests(run, form) {
  const tests = {};
  for (const test of run.tests || []) {
    const value = form.elements[`${test.code}.value`];
    const result = form.elements[`${test.code}.result`];
    const entry = {};
    if (result && result.value) entry.result = result.value;
    if (entry.result === "pending") { tests[test.code] = entry; continue; }
    if (["range", "max", "min"].includes(test.kind)) {
      const number = parseDecimal(value.value);
      if (!Number.isFinite(number)) {
        throw new Error(_("{test}: enter a number (a decimal comma is fine)", { test: testLabel(test.code) }));
      }
      entry.value = number;
    } else {
      if (!entry.result) throw new Error(_("{test}: choose pass or fail", { test: testLabel(test.code) }));
      if (value) entry.value = value.value.trim();
    }
    tests[test.code] = entry;
  }
  return tests;
}

function submitTests(event) {
  event.preventDefault();
  const run = records.testsFor;
  const form = $("#batch-tests-form");
  const error = $("#batch-tests-error");
  let tests;
  try {
    tests = collectTests(run, form);
  } catch (exc) {
    showError(error, exc);
    return;
  }
  error.hidden = true;
  openSign({
    title: _("Sign batch record {batch}", { batch: run.batch_id }),
    what: _("{product}, batch {batch}: the product assay and the release tests as typed.",
      { product: run.product_name, batch: run.batch_id }),
    meaning: "performed",
    comment: true,
    async submit(body) {
      try {
        await api(`/api/batches/${encodeURIComponent(run.batch_id)}/sign`, {
          method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ ...body, tests }),
        });
      } catch (exc) {
        if (exc.status === 403) throw exc;  // the password: the dialog says so, try again
        showError(error, exc);  // the record refused (a test, the run's state): in the form
        return;
      }
      form.hidden = true;
      records.testsFor = null;
      await loadBatches();
    },
  });
}

function renderDoseForm() {
  const form = $("#dose-form");
  form.hidden = !records.permissions.dispense || !records.batches.length;
  const select = form.elements.batch_id;
  const chosen = select.value;
  const options = records.batches.map((b) => {
    const release = b.release ? b.release.decision : "pending";
    return el("option", { value: b.record.batch_id, "data-device": (b.record.assay || {}).device || "" },
      `${b.record.batch_id} — ${b.record.product} (${decisionText(release)})`);
  });
  select.replaceChildren(...options);
  if (chosen && records.batches.some((b) => b.record.batch_id === chosen)) select.value = chosen;
  else {
    const released = records.batches.find((b) => b.release && b.release.decision === "released");
    if (released) select.value = released.record.batch_id;
  }
  const device = form.elements.device;
  if (!device.value) {
    const option = select.selectedOptions[0];
    if (option) device.value = option.dataset.device;
  }
}

function submitDose(event) {
  event.preventDefault();
  const form = $("#dose-form");
  const error = $("#dose-error");
  const f = form.elements;
  const volume = parseDecimal(f.volume_ml.value);
  const missing = ["batch_id", "prescription_id", "patient_id", "device"].find((n) => !f[n].value.trim());
  if (missing || !(volume > 0)) {
    showError(error, new Error(missing ? _("Fill in every field.")
      : _("Volume: enter a number of mL (a decimal comma is fine)")));
    return;
  }
  const dose = { batch_id: f.batch_id.value, prescription_id: f.prescription_id.value.trim(),
    patient_id: f.patient_id.value.trim(), volume_ml: volume, device: f.device.value.trim() };
  error.hidden = true;
  openSign({
    title: _("Dispense from batch {batch}", { batch: dose.batch_id }),
    what: _("Order {order}, patient {patient}: {volume} mL measured now on {device}.",
      { order: dose.prescription_id, patient: dose.patient_id,
        volume: fmtNumber(String(volume)), device: dose.device }),
    meaning: "performed",
    comment: true,
    async submit(body) {
      try {
        await api("/api/doses", {
          method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ ...body, ...dose }),
        });
      } catch (exc) {
        if (exc.status === 403 && exc.code !== "role_not_allowed") throw exc;
        showError(error, exc);  // 409 batch_not_released, unknown_prescription...: in the form
        return;
      }
      for (const name of ["prescription_id", "patient_id", "volume_ml"]) f[name].value = "";
      await loadBatches();
    },
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("#batch-tests-form").addEventListener("submit", submitTests);
  $("#batch-tests-cancel").addEventListener("click", () => {
    $("#batch-tests-form").hidden = true;
    records.testsFor = null;
  });
  $("#dose-form").addEventListener("submit", submitDose);
  $("#dose-form").elements.batch_id.addEventListener("change", (event) => {
    const option = event.target.selectedOptions[0];
    if (option && option.dataset.device) $("#dose-form").elements.device.value = option.dataset.device;
  });
});

function decide(batch, decision) {
  const title = decision === "released" ? _("Release batch {batch}", { batch: batch.batch_id })
    : _("Reject batch {batch}", { batch: batch.batch_id });
  openSign({
    title,
    what: _("{product}, batch {batch}: the qualified person's decision.", { product: batch.product, batch: batch.batch_id }),
    meaning: decision,
    comment: true,
    async submit(body) {
      await api(`/api/batches/${encodeURIComponent(batch.batch_id)}/release`, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ ...body, decision }),
      });
      await loadBatches();
    },
  });
}

function renderBatches() {
  const rows = records.runs.map((run) => el("tr", { "data-batch": run.batch_id, class: "run" },
    el("td", {}, run.batch_id),
    el("td", {}, run.product_name),
    el("td", {}, run.eos_time ? fmtTime(run.eos_time) : "—"),
    el("td", { class: "num" }, fmtMbqValue(run.eos_activity_mbq)),
    el("td", { class: "num" }, fmtPercent(run.yield_decay_corrected_pct)),
    el("td", {}, "—"),
    el("td", { class: "release" }, pill(runStateText(run.state), "warn")),
    runActions(run),
  ));
  for (const b of records.batches) {
    const batch = b.record;
    const release = b.release ? b.release.decision : "pending";
    const deviations = (batch.deviations || []).length;
    const actions = el("td", { class: "actions" },
      el("a", { href: `/api/records/report.pdf?id=${encodeURIComponent(batch.id)}`, class: "batch-pdf" }, _("PDF")));
    if (release === "pending") {
      if (records.permissions.released && batch.result === "pass") {
        const go = el("button", { type: "button", class: "primary batch-release" }, _("Release"));
        go.addEventListener("click", () => decide(batch, "released"));
        actions.append(" ", go);
      }
      if (records.permissions.rejected) {
        const no = el("button", { type: "button", class: "batch-reject" }, _("Reject"));
        no.addEventListener("click", () => decide(batch, "rejected"));
        actions.append(" ", no);
      }
    }
    const state = release === "pending" && batch.result !== "pass" ? "fail" : release;
    const text = state === "fail" ? _("failed: reject") : decisionText(release);
    const pending = b.release && (b.release.pending || []).length
      ? el("div", { class: "muted small" }, _("pending: {tests}", { tests: b.release.pending.join(", ") })) : null;
    rows.push(el("tr", { "data-batch": batch.batch_id, "data-release": release },
      el("td", {}, batch.batch_id),
      el("td", {}, batch.product),
      el("td", {}, batch.eos_time ? fmtTime(batch.eos_time) : "—"),
      el("td", { class: "num" }, fmtMbqValue(batch.eos_activity_mbq)),
      el("td", { class: "num" }, fmtPercent(batch.yield_decay_corrected_pct)),
      el("td", {}, deviations ? pill(String(deviations), "warn") : "—"),
      el("td", { class: "release" }, pill(text, state === "released" ? "ok" : state === "pending" ? "warn" : "bad"), pending),
      actions,
    ));
  }
  if (!rows.length) rows.push(el("tr", {}, el("td", { colSpan: 8, class: "muted" }, _("No batch records yet."))));
  $("#batches-table tbody").replaceChildren(...rows);
  // A synthesis run in progress changes without a record: look again while the page is open.
  clearTimeout(records.poll);
  if (records.shown && records.runs.length) records.poll = setTimeout(loadBatches, 2000);
}

window.IsoRecords = {
  onTab(name) {
    records.shown = name === "batches";
    if (records.shown) loadBatches();
    else clearTimeout(records.poll);
  },
  onRecord() {
    if (records.shown) loadBatches();
  },
};
