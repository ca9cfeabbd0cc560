// IsoEdge console: the radiopharmacy's records (batches and their release). Plain JavaScript on
// top of console.js (its $, el, pill, api, fmtTime, fmtNumber helpers); values go in with
// textContent only.
"use strict";

const records = {
  shown: false,
  batches: [],
  permissions: {},
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
    records.permissions = body.permissions || {};
    error.hidden = true;
  } catch (exc) {
    error.textContent = exc.message;
    error.hidden = false;
    return;
  }
  renderBatches();
}

function renderBatches() {
  const rows = records.batches.map((b) => {
    const batch = b.record;
    const release = b.release ? b.release.decision : "pending";
    const deviations = (batch.deviations || []).length;
    return el("tr", { "data-batch": batch.batch_id },
      el("td", {}, batch.batch_id),
      el("td", {}, batch.product),
      el("td", {}, batch.eos_time ? fmtTime(batch.eos_time) : "—"),
      el("td", { class: "num" }, fmtMbqValue(batch.eos_activity_mbq)),
      el("td", { class: "num" }, fmtPercent(batch.yield_decay_corrected_pct)),
      el("td", {}, deviations ? pill(String(deviations), "warn") : "—"),
      el("td", { class: "release" }, pill(decisionText(release), release === "released" ? "ok" : release === "rejected" ? "bad" : "warn")),
      el("td", {}, el("a", { href: `/api/records/report.pdf?id=${encodeURIComponent(batch.id)}`, class: "batch-pdf" }, _("PDF"))),
    );
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { colSpan: 8, class: "muted" }, _("No batch records yet."))));
  $("#batches-table tbody").replaceChildren(...rows);
}

window.IsoRecords = {
  onTab(name) {
    records.shown = name === "batches";
    if (records.shown) loadBatches();
  },
  onRecord() {
    if (records.shown) loadBatches();
  },
};
