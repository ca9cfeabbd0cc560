"""`records_report()`: the PDF of records of one kind (what `isoedge report KIND` writes).

A summary table, then every record: its fields as its kind's section prints them, then each
signature with its meaning, printed name, site and UTC times and the record's SHA-256. Returns
bytes: no I/O. The kinds' sections are imported here (each registers itself).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.core.i18n import format_datetime
from agent.qc.reports import _code, _Doc, _signature_rows, _site_line
from agent.records import sections as _sections  # noqa: F401 - registers the kinds' sections
from agent.records.kinds import kind_of
from agent.records.pdf import KIND_TITLES, REPORT_TITLES, SECTIONS, generic_section, value_text
from agent.records.store import subject_of

if TYPE_CHECKING:
    from collections.abc import Sequence
    from zoneinfo import ZoneInfo


def record_section(doc: _Doc, record: dict[str, Any], zone: ZoneInfo | None) -> None:
    """One record: heading, its kind's fields, its signatures."""
    kind = kind_of(record)
    title = doc.tr(KIND_TITLES.get(kind, kind))
    subject = subject_of(record)
    heading = f"{title} — {subject}" if subject else title
    doc.h3(f"{heading} — {format_datetime(record['t'], doc.lang, zone)}")
    if record.get("corrects"):
        doc.p(doc.tr("This record corrects record {id}.", id=record["corrects"]))
    SECTIONS.get(kind, generic_section)(doc, record, zone)
    doc.p(doc.tr("Record {id}, content SHA-256 of the record without signatures below.",
                 id=record["id"]), small=True)  # fmt: skip
    doc.table(_signature_rows(doc, record, []), [24, 40, 30, 30, 56])
    doc.space()


def _outcome(record: dict[str, Any]) -> Any:
    for key in ("decision", "result", "status"):
        if record.get(key) is not None:
            return record[key]
    return None


def records_report(
    records: Sequence[dict[str, Any]],
    kind: str,
    *,
    site: str,
    zone: ZoneInfo | None,
    period: str = "",
    lang: str = "en",
) -> bytes:
    """The PDF of `records` (all of `kind`), oldest first: a summary, then every record."""
    doc = _Doc(REPORT_TITLES.get(kind, kind), "", lang=lang)
    doc.title = doc.tr(REPORT_TITLES.get(kind, kind))
    doc.story.clear()
    doc.h1(doc.title)
    line = _site_line(doc.lang, site, period)
    if line:
        doc.p(line)
    rows: list[list[Any]] = [[doc.tr("performed"), doc.tr("subject"), doc.tr("result"),
                              doc.tr("signed by"), doc.tr("record id")]]  # fmt: skip
    for record in records:
        signers = ", ".join(
            f"{s.get('name', '')} ({_code(doc, s.get('meaning'))})"
            for s in record.get("signatures", [])
        )
        rows.append([format_datetime(record["t"], doc.lang, zone), subject_of(record) or "",
                     value_text(doc, _outcome(record), zone), signers, record["id"]])  # fmt: skip
    if not records:
        doc.p(doc.tr("No records in this period."))
    else:
        doc.table(rows, [34, 34, 24, 50, 38])
        doc.space()
        for record in records:
            record_section(doc, record, zone)
    return doc.pdf()


__all__ = ["record_section", "records_report"]
