"""How the batch, release and dispensing records print (registered with agent.records.pdf)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.core.i18n import N_, format_datetime
from agent.qc.reports import _code
from agent.records.pdf import section, value_text

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from agent.qc.reports import _Doc

TEST_NAMES: dict[str, str] = {
    "appearance": N_("Appearance"),
    "ph": N_("pH"),
    "rcp": N_("Radiochemical purity"),
    "residual_solvents": N_("Residual solvents"),
    "endotoxin": N_("Bacterial endotoxins"),
    "filter_integrity": N_("Filter integrity"),
    "sterility": N_("Sterility"),
    "identity": N_("Half-life identity"),
}
QUANTITIES: dict[str, str] = {
    "pressure": N_("Hot-cell pressure"),
    "particles_0_5um": N_("Particles ≥ 0.5 µm"),
    "dose_rate": N_("Dose rate"),
}


def _t(doc: _Doc, value: Any, zone: ZoneInfo | None) -> str:
    return format_datetime(str(value), doc.lang, zone) if value else "—"


def _limit(doc: _Doc, low: Any, high: Any, unit: str = "") -> str:
    if low is not None and high is not None:
        text = f"{doc.num(low)} … {doc.num(high)}"
    elif high is not None:
        text = f"≤ {doc.num(high)}"
    elif low is not None:
        text = f"≥ {doc.num(low)}"
    else:
        text = "—"
    return f"{text} {unit}".strip()


def _window(assay: dict[str, Any]) -> tuple[Any, Any]:
    window = assay.get("window_min") or [None, None]
    return window[0], window[1]


def _pairs(doc: _Doc, rows: list[tuple[str, Any]]) -> None:
    doc.table([[doc.tr("field"), doc.tr("value")], *[[k, v] for k, v in rows]], [60, 120])


@section("batch")
def batch_section(doc: _Doc, record: dict[str, Any], zone: ZoneInfo | None) -> None:
    """Synthesis, yield, environment, assay, release tests, deviations."""
    _ = doc.tr
    _pairs(doc, [
        (_("radiopharmaceutical"), f"{record.get('product')} ({record.get('nuclide')})"),
        (_("synthesis module"), record.get("device")),
        (_("start of synthesis"), _t(doc, record.get("started"), zone)),
        (_("end of synthesis (EOS)"), _t(doc, record.get("eos_time"), zone)),
        (_("activity at EOS"), f"{doc.mbq(record.get('eos_activity_mbq'))} MBq"),
        (_("yield at EOS"), f"{doc.num(record.get('yield_pct'))} %"),
        (_("decay-corrected yield"), f"{doc.num(record.get('yield_decay_corrected_pct'))} % "
         + _("(investigation outside {low} … {high} %)",
             low=doc.num((record.get("yield_investigation_pct") or [None, None])[0]),
             high=doc.num((record.get("yield_investigation_pct") or [None, None])[1]))),
        (_("expiry"), _t(doc, record.get("expiry"), zone)),
        (_("result"), _code(doc, record.get("result"))),
    ])  # fmt: skip
    doc.p(_("Steps of the synthesis run"))
    doc.table([[_("step"), _("started")]] + [
        [s.get("step"), _t(doc, s.get("t"), zone)] for s in record.get("steps") or []
    ], [60, 60])  # fmt: skip
    doc.p(_("Hot-cell environment during the run"))
    rows: list[list[Any]] = [[_("quantity"), _("limit"), _("readings"), _("min"), _("max"),
                              _("excursions"), _("result"), _("basis")]]  # fmt: skip
    for env in record.get("environment") or []:
        excursions = "; ".join(
            f"{_t(doc, e['start'], zone)} … {_t(doc, e['end'], zone)}: {doc.num(e['extreme'])}"
            for e in env.get("excursions") or []
        )
        rows.append([
            doc.tr(QUANTITIES.get(env.get("quantity", ""), env.get("quantity", ""))),
            _limit(doc, env.get("low"), env.get("high"), env.get("unit", "")),
            env.get("readings"), doc.num(env.get("min")), doc.num(env.get("max")),
            excursions or "—", _code(doc, env.get("result")), env.get("basis"),
        ])  # fmt: skip
    doc.table(rows, [24, 22, 14, 16, 16, 40, 18, 30])
    assay = record.get("assay") or {}
    doc.p(_("Product assay on the dose calibrator"))
    _pairs(doc, [
        (_("dose calibrator"), assay.get("device")),
        (_("activity"), (f"{doc.mbq(assay.get('measured_mbq'))} MBq, "
                         f"{_t(doc, assay.get('measured_at'), zone)}")),
        (_("half-life (fitted)"), (f"{doc.num(assay.get('half_life_min'))} ± "
                                   f"{doc.num(assay.get('half_life_u_min'), 2)} min")),
        (_("identity window"), _limit(doc, *_window(assay), unit="min")),
        (_("readings"), assay.get("readings_count")),
        (_("half-life identity"), _code(doc, assay.get("identity"))),
        (_("basis"), assay.get("basis")),
    ])  # fmt: skip
    doc.p(_("Release tests against the specification"))
    rows = [[_("test"), _("specification"), _("value"), _("result"), _("basis")]]
    for test in record.get("tests") or []:
        spec = test.get("expect") or _limit(doc, test.get("low"), test.get("high"),
                                            test.get("unit", ""))  # fmt: skip
        rows.append([doc.tr(TEST_NAMES.get(test["code"], test["code"])), spec,
                     value_text(doc, test.get("value"), zone), _code(doc, test.get("result")),
                     test.get("basis")])  # fmt: skip
    doc.table(rows, [32, 30, 30, 20, 68])
    deviations = record.get("deviations") or []
    if deviations:
        doc.p(_("Deviations"))
        for deviation in deviations:
            doc.p(_("Decay-corrected yield {value} % outside the investigation limits {low} … "
                    "{high} % ({basis}): a deviation is opened.", value=doc.num(deviation["value"]),
                    low=doc.num(deviation["low"]), high=doc.num(deviation["high"]),
                    basis=deviation.get("basis")))  # fmt: skip
    if record.get("comment"):
        doc.p(_("Comment: {text}", text=record["comment"]))


@section("release")
def release_section(doc: _Doc, record: dict[str, Any], zone: ZoneInfo | None) -> None:
    """The qualified person's decision and what it rests on."""
    _ = doc.tr
    pending = ", ".join(doc.tr(TEST_NAMES.get(p, p)) for p in record.get("pending") or [])
    _pairs(doc, [
        (_("decision"), _code(doc, record.get("decision"))),
        (_("batch"), record.get("batch_id") or record.get("eluate_id")),
        (_("radiopharmaceutical"), record.get("product")),
        (_("batch record"), f"{record.get('record')} (SHA-256 {record.get('record_sha256')})"),
        (_("pending at release"), pending or "—"),
        (_("procedure"), record.get("procedure") or "—"),
        (_("expiry"), _t(doc, record.get("expiry"), zone)),
        (_("comment"), record.get("comment") or "—"),
    ])  # fmt: skip


@section("dispensing")
def dispensing_section(doc: _Doc, record: dict[str, Any], zone: ZoneInfo | None) -> None:
    """The dose, its measurement, its prescription and patient, the check."""
    _ = doc.tr
    patient = record.get("patient") or {}
    tol = record.get("tolerance") or {}
    _pairs(doc, [
        (_("batch"), record.get("batch_id")),
        (_("radiopharmaceutical"), f"{record.get('product')} ({record.get('nuclide')})"),
        (_("patient (hospital number)"), patient.get("hospital_number")),
        *([(_("patient name"), patient["name"])] if patient.get("name") else []),
        (_("prescription"), record.get("prescription_id")),
        (_("prescribed"), (f"{doc.mbq(record.get('prescribed_mbq'))} MBq, "
                           f"{_t(doc, record.get('scheduled'), zone)}")),
        (_("dose calibrator"), record.get("device")),
        (_("measured"), (f"{doc.mbq(record.get('measured_mbq'))} MBq, "
                         f"{_t(doc, record.get('measured_at'), zone)}")),
        (_("at the prescription's time"),
         f"{doc.mbq(record.get('activity_at_scheduled_mbq'))} MBq"),
        (_("deviation"), doc.pct(record.get("deviation_pct"))),
        (_("tolerance"), _("action beyond ±{action} %, refused beyond ±{fail} % ({basis})",
                           action=doc.num(tol.get("action_pct")),
                           fail=doc.num(tol.get("fail_pct")), basis=tol.get("basis"))),
        (_("volume"), f"{doc.num(record.get('volume_ml'))} mL"),
        (_("expiry"), _t(doc, record.get("expiry"), zone)),
        (_("result"), _code(doc, record.get("result"))),
    ])  # fmt: skip


__all__ = ["TEST_NAMES", "batch_section", "dispensing_section", "release_section"]
