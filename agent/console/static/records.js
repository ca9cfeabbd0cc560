// IsoEdge console: the radiopharmacy's records (batches and their release). Plain JavaScript on
// top of console.js (its $, el, pill, api, fmtTime, fmtNumber helpers); values go in with
// textContent only.
"use strict";

const records = {
  shown: false,
  batches: [],
  runs: [],
  permissions: {},
  poll: null,
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
  try {
    const body = await api("/api/batches");
    records.batches = body.batches;
    records.runs = body.runs || [];
    records.permissions = body.permissions || {};
    error.hidden = true;
  } catch (exc) {
    error.textContent = exc.message;
    error.hidden = false;
    return;
  }
  renderBatches();
}

function runStateText(state) {
  return { running: _("synthesis running"), eos: _("end of synthesis: assay the product"),
    assaying: _("assaying the product"), assayed: _("assayed: release tests to sign") }[state] || state;
}

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
    el("td", {}),
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
