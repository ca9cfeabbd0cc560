"""PDF building blocks of records (reportlab, the QC reports' fonts, layout and languages).

Per kind, what prints a record's fields (`SECTIONS`, registered with `@section(kind)` by the
modules agent.records.report imports), else `generic_section`: a table of its fields. Labels
are the catalog's (`FIELD_LABELS`); values stay the record's own codes and numbers, formatted
in the report's language.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent.core.i18n import N_, format_datetime, format_number
from agent.core.messages import render_reasons
from agent.qc.reports import _code, _Doc
from agent.records.generator_labels import GENERATOR_LABELS

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

Doc = _Doc
Section = Callable[["_Doc", dict[str, Any], "ZoneInfo | None"], None]

KIND_TITLES: dict[str, str] = {
    "test": N_("QC test record"),
    "elution": N_("Generator elution record"),
    "batch": N_("Batch record"),
    "release": N_("Release record"),
    "dispensing": N_("Dispensing record"),
    "shipment": N_("Shipment record"),
    "receipt": N_("Receipt record"),
    "waste": N_("Waste decay-in-storage record"),
}
REPORT_TITLES: dict[str, str] = {
    "test": N_("QC test records"),
    "elution": N_("Generator elution records"),
    "batch": N_("Batch records"),
    "release": N_("Release records"),
    "dispensing": N_("Dispensing records"),
    "shipment": N_("Shipment records"),
    "receipt": N_("Receipt records"),
    "waste": N_("Waste decay-in-storage records"),
}
FIELD_LABELS: dict[str, str] = {
    "id": N_("record id"),
    "t": N_("performed"),
    "site": N_("site"),
    "corrects": N_("corrects record"),
    "correction_reason": N_("reason for the correction"),
    "batch_id": N_("batch"),
    "eluate_id": N_("eluate"),
    "shipment_id": N_("shipment"),
    "product": N_("radiopharmaceutical"),
    "nuclide": N_("nuclide"),
    "device": N_("device"),
    "result": N_("result"),
    "decision": N_("decision"),
    "comment": N_("comment"),
}
FIELD_LABELS.update({k: v for k, v in GENERATOR_LABELS.items() if k not in FIELD_LABELS})
SECTIONS: dict[str, Section] = {}
"""Per kind, what prints its fields (the kind's module registers it); else a generic table."""

_SKIP = frozenset({"signatures", "kind"})


def section(kind: str) -> Callable[[Section], Section]:
    """Register the function that prints records of `kind`."""

    def _register(fn: Section) -> Section:
        SECTIONS[kind] = fn
        return fn

    return _register


def label(doc: _Doc, key: str) -> str:
    """A field's label in the report's language (the key itself when it has none)."""
    text = FIELD_LABELS.get(key)
    return doc.tr(text) if text else key


def value_text(doc: _Doc, value: Any, zone: ZoneInfo | None) -> str:  # noqa: PLR0911 - per type
    """A field's value as the report's language writes it (times in the site's zone)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return doc.tr("yes") if value else doc.tr("no")
    if isinstance(value, float):
        return "—" if not math.isfinite(value) else format_number(value, doc.lang, significant=6)
    if (
        isinstance(value, str)
        and len(value) >= _STAMP_LEN
        and value[4:5] == "-"
        and value.endswith("Z")
    ):
        try:
            return format_datetime(value, doc.lang, zone)
        except ValueError:
            return value
    if isinstance(value, str):
        return _code(doc, value) if value in _CODES else value
    if isinstance(value, list) and value and all(_is_reason(v) for v in value):
        return render_reasons({"reasons": value}, doc.lang, zone)  # [[catalog id, params], ...]
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        return ", ".join(value_text(doc, v, zone) for v in value)
    return str(value)


def _is_reason(value: Any) -> bool:
    """A hold reason as the QA desk keeps it: `[catalog id, params]`."""
    return (isinstance(value, (list, tuple)) and len(value) == 2  # noqa: PLR2004 - [id, params]
            and isinstance(value[0], str) and isinstance(value[1], dict))


_STAMP_LEN = len("2026-01-01T00:00:00Z")
# Why a generator's eluate is held, and its tests' outcomes (agent/records/elution.py): codes
# printed as the catalog's text (the console's elution page shows the same).
HOLD_CODES: tuple[str, ...] = (
    N_("mo99_over_limit"), N_("aluminium_over_limit"), N_("canister_factor_validation_overdue"),
    N_("identity_half_life_outside_window"), N_("passed"), N_("failed"),
    N_("passed_below_detection_limit"), N_("inconclusive_below_detection_limit"),
    N_("too_early"), N_("inconclusive"), N_("shelf_life"),
)
_CODES = frozenset({"pass", "fail", "action", "pending", "released", "rejected", "performed",
                    "reviewed", "approved", "on_hold", *HOLD_CODES})  # fmt: skip


def generic_section(doc: _Doc, record: dict[str, Any], zone: ZoneInfo | None) -> None:
    """Every field: scalars in one table, lists of objects each as a table of their own."""
    rows: list[list[Any]] = [[doc.tr("field"), doc.tr("value")]]
    nested: list[tuple[str, Any]] = []
    for key, value in record.items():
        if key in _SKIP:
            continue
        if isinstance(value, dict) or (isinstance(value, list) and any(
                isinstance(v, dict) for v in value)):  # fmt: skip
            nested.append((key, value))
            continue
        rows.append([label(doc, key), value_text(doc, value, zone)])
    doc.table(rows, [55, 125])
    for key, value in nested:
        doc.p(label(doc, key))
        items = value if isinstance(value, list) else [value]
        columns: list[str] = []
        for item in items:
            columns.extend(k for k in item if k not in columns)
        table = [[label(doc, c) for c in columns]]
        table.extend([value_text(doc, item.get(c), zone) for c in columns] for item in items)
        doc.table(table)


__all__ = [
    "FIELD_LABELS",
    "HOLD_CODES",
    "KIND_TITLES",
    "SECTIONS",
    "Doc",
    "generic_section",
    "label",
    "section",
    "value_text",
]
