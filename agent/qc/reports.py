"""PDF reports of the QC programme (reportlab; charts with matplotlib): what inspectors read.

- `daily_sheet`: one calibrator's tests of one day, with expected/measured/deviation per step.
- `linearity_report`: one linearity record: activity vs time (log axis) with the fit, residuals.
- `monthly_summary`: a month of one calibrator's tests, the constancy control chart.
- `audit_extract`: the audit trail of a period (and the signed review of it, if any).
- `qc_report`: what `isoedge report qc` writes: summary, control charts, every record with
  its steps, linearity plots, and every signature (performed, reviewed, approved).

Every function returns the PDF as bytes and does no I/O of its own beyond reading fonts, so
the console can serve it and the CLI can write it. Text uses DejaVu Sans (shipped with
matplotlib) so ±, µ and ½ print as such. Records' own hashes are printed with each
signature so a reader can check the binding.
"""

from __future__ import annotations

import io
import math
import statistics
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence
    from zoneinfo import ZoneInfo

    from reportlab.platypus import Flowable

_FONT = "IsoEdgeSans"
_FONT_BOLD = "IsoEdgeSans-Bold"
_fonts_ready = False


def _register_fonts() -> None:
    global _fonts_ready  # noqa: PLW0603 - register once per process
    if _fonts_ready:
        return
    import matplotlib as mpl  # noqa: PLC0415 - heavy; reports only
    from reportlab.pdfbase import pdfmetrics  # noqa: PLC0415
    from reportlab.pdfbase.ttfonts import TTFont  # noqa: PLC0415

    fonts = Path(mpl.get_data_path()) / "fonts" / "ttf"
    pdfmetrics.registerFont(TTFont(_FONT, str(fonts / "DejaVuSans.ttf")))
    pdfmetrics.registerFont(TTFont(_FONT_BOLD, str(fonts / "DejaVuSans-Bold.ttf")))
    _fonts_ready = True


class _Doc:
    """A report being built: styles, flowables, then `pdf()`."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        _register_fonts()
        from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet  # noqa: PLC0415

        base = getSampleStyleSheet()
        self.title = title
        self.styles = {
            "h1": ParagraphStyle("h1", parent=base["Heading1"], fontName=_FONT_BOLD, fontSize=16),
            "h2": ParagraphStyle("h2", parent=base["Heading2"], fontName=_FONT_BOLD, fontSize=12),
            "h3": ParagraphStyle("h3", parent=base["Heading3"], fontName=_FONT_BOLD, fontSize=10),
            "p": ParagraphStyle("p", parent=base["BodyText"], fontName=_FONT, fontSize=8.5,
                                leading=11),
            "small": ParagraphStyle("small", parent=base["BodyText"], fontName=_FONT,
                                    fontSize=7, leading=9),
        }  # fmt: skip
        self.story: list[Flowable] = []
        self.h1(title)
        if subtitle:
            self.p(subtitle)

    def _para(self, text: str, style: str) -> None:
        from reportlab.platypus import Paragraph  # noqa: PLC0415

        self.story.append(Paragraph(_escape(text), self.styles[style]))

    def h1(self, text: str) -> None:
        """A title."""
        self._para(text, "h1")

    def h2(self, text: str) -> None:
        """A section heading."""
        self._para(text, "h2")

    def h3(self, text: str) -> None:
        """A sub-heading."""
        self._para(text, "h3")

    def p(self, text: str, *, small: bool = False) -> None:
        """A paragraph."""
        self._para(text, "small" if small else "p")

    def table(self, rows: Sequence[Sequence[Any]], widths: Sequence[float] | None = None) -> None:
        """A table; the first row is the header."""
        from reportlab.lib import colors  # noqa: PLC0415
        from reportlab.lib.units import mm  # noqa: PLC0415
        from reportlab.platypus import Paragraph, Table, TableStyle  # noqa: PLC0415

        cells = [
            [Paragraph(_escape("" if c is None else str(c)), self.styles["small"]) for c in row]
            for row in rows
        ]
        table = Table(cells, colWidths=None if widths is None else [w * mm for w in widths],
                      repeatRows=1)  # fmt: skip
        style = [
            ("GRID", (0, 0), (-1, -1), 0.3, colors.grey),
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef5")),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ]
        for index, row in enumerate(rows[1:], start=1):
            text = " ".join(str(c) for c in row)
            if " fail" in f" {text}" or "FAIL" in text:
                style.append(("BACKGROUND", (0, index), (-1, index), colors.HexColor("#fde2e2")))
            elif " action" in f" {text}":
                style.append(("BACKGROUND", (0, index), (-1, index), colors.HexColor("#fff4d6")))
        table.setStyle(TableStyle(style))
        self.story.append(table)

    def image(self, png: bytes, width_mm: float = 170) -> None:
        """A chart (PNG bytes), scaled to `width_mm`."""
        from reportlab.lib.units import mm  # noqa: PLC0415
        from reportlab.lib.utils import ImageReader  # noqa: PLC0415
        from reportlab.platypus import Image  # noqa: PLC0415

        reader = ImageReader(io.BytesIO(png))
        w, h = reader.getSize()
        self.story.append(Image(io.BytesIO(png), width=width_mm * mm, height=width_mm * mm * h / w))

    def space(self, mm_: float = 4) -> None:
        """Vertical space."""
        from reportlab.lib.units import mm  # noqa: PLC0415
        from reportlab.platypus import Spacer  # noqa: PLC0415

        self.story.append(Spacer(1, mm_ * mm))

    def page_break(self) -> None:
        """Start a new page."""
        from reportlab.platypus import PageBreak  # noqa: PLC0415

        self.story.append(PageBreak())

    def pdf(self) -> bytes:
        """The finished document."""
        from reportlab.lib.pagesizes import A4  # noqa: PLC0415
        from reportlab.lib.units import mm  # noqa: PLC0415
        from reportlab.platypus import SimpleDocTemplate  # noqa: PLC0415

        out = io.BytesIO()
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        title = self.title

        def footer(canvas: Any, doc: Any) -> None:
            canvas.saveState()
            canvas.setFont(_FONT, 7)
            canvas.drawString(15 * mm, 10 * mm, f"IsoEdge — {title} — generated {stamp}")
            canvas.drawRightString(195 * mm, 10 * mm, f"page {doc.page}")
            canvas.restoreState()

        doc = SimpleDocTemplate(
            out, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=15 * mm,
            bottomMargin=18 * mm, title=title, author="IsoEdge",
        )  # fmt: skip
        if not self.story:
            self.p("(empty)")
        doc.build(self.story, onFirstPage=footer, onLaterPages=footer)
        return out.getvalue()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        return f"{value:.{digits}g}"
    return str(value)


def _local(t: str, zone: ZoneInfo | None) -> str:
    stamp = datetime.fromisoformat(t)
    if zone is None:
        return stamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return stamp.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


# ------------------------------------------------------------------ record sections
def _signature_rows(record: dict[str, Any], reviews: Sequence[dict[str, Any]]) -> list[list[str]]:
    rows: list[list[Any]] = [
        ["meaning", "printed name (user, role)", "UTC time", "local time", "record SHA-256"]
    ]
    for item in [record, *reviews]:
        for s in item.get("signatures", []):
            rows.append([  # noqa: PERF401
                s.get("meaning", ""),
                f"{s.get('name', '')} ({s.get('user', '')}, {s.get('role', '')})",
                s.get("t", ""),
                f"{s.get('t_local', '')} {s.get('timezone', '')}",
                str(s.get("record_sha256", ""))[:16] + "…",
            ])  # fmt: skip
        if item is not record and item.get("comment"):
            rows.append(["comment", item["comment"], "", "", ""])
    return rows


def _record_section(
    doc: _Doc, record: dict[str, Any], reviews: Sequence[dict[str, Any]], zone: ZoneInfo | None
) -> None:
    test = record.get("test", "?")
    doc.h3(
        f"{test} — {record.get('device')} — {_local(record['t'], zone)} — result "
        f"{str(record.get('result', '?')).upper()}"
    )
    source = record.get("source")
    if source:
        doc.p(
            f"Source {source.get('id')} ({source.get('nuclide')}), certified "
            f"{_fmt(source.get('certified_mbq'))} MBq on {source.get('certified_date')}, "
            f"certificate {source.get('certificate')}."
        )
    tol = record.get("tolerance") or {}
    if tol.get("action_pct") is not None:
        doc.p(
            f"Tolerance: pass within ±{tol['action_pct']:g} %, action to ±{tol['fail_pct']:g} %, "
            f"fail beyond. Basis: {tol.get('basis')}.", small=True,
        )  # fmt: skip
    elif tol.get("max_mbq") is not None:
        doc.p(f"Limit: {tol['max_mbq']:g} MBq. Basis: {tol.get('basis')}.", small=True)
    rows: list[list[Any]] = [["step", "setting", "expected (MBq)", "u (MBq)", "measured (MBq)",
                              "deviation", "result", "readings"]]  # fmt: skip
    for step in record.get("steps", []):
        rows.append([  # noqa: PERF401
            step.get("index"),
            step.get("setting") or step.get("container") or step.get("kind"),
            _fmt(step.get("expected_mbq")),
            _fmt(step.get("uncertainty_mbq"), 2),
            _fmt(step.get("measured_mbq")),
            "—" if step.get("deviation_pct") is None else f"{step['deviation_pct']:+.2f} %",
            step.get("result") or "",
            len(step.get("readings") or []),
        ])  # fmt: skip
    if test != "linearity":
        doc.table(rows, [10, 22, 24, 16, 24, 20, 16, 18])
    factors = record.get("correction_factors")
    if factors:
        doc.p("Correction factors: " + ", ".join(f"{k} {v:.4f}" for k, v in factors.items()))
    lin = record.get("linearity")
    if lin:
        doc.p(
            f"{len(lin['points'])} points from {_fmt(lin['range_mbq'][1])} MBq to "
            f"{_fmt(lin['range_mbq'][0])} MBq; fitted half-life "
            f"{lin['half_life_fit_s'] / 3600:.4f} ± {lin['half_life_fit_uncertainty_s'] / 3600:.4f}"
            f" h vs table {lin['half_life_table_s'] / 3600:.4f} h "
            f"({lin['half_life_deviation_pct']:+.2f} %)."
        )
        if lin.get("failing_points"):
            doc.p("Outside tolerance: " + "; ".join(lin["failing_points"]))
        doc.image(linearity_plot(record), 165)
    doc.p(f"Record {record['id']}, content SHA-256 of the record without signatures below.",
          small=True)  # fmt: skip
    doc.table(_signature_rows(record, reviews), [18, 56, 38, 44, 26])
    doc.space()


# ------------------------------------------------------------------ charts
def _pyplot() -> Any:
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def _png(fig: Any) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=130, bbox_inches="tight")
    _pyplot().close(fig)
    return out.getvalue()


def control_chart(records: Sequence[dict[str, Any]], title: str = "") -> bytes:  # noqa: C901
    """Constancy deviation per setting over time, with action and fail bands and ±2 SD."""
    plt = _pyplot()
    series: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    action = fail = None
    for record in records:
        if record.get("test") != "constancy" or record.get("record", "test") != "test":
            continue
        tol = record.get("tolerance") or {}
        action, fail = tol.get("action_pct"), tol.get("fail_pct")
        for step in record.get("steps", []):
            if step.get("deviation_pct") is not None:
                t = datetime.fromisoformat(step.get("measured_at") or record["t"])
                series[step.get("setting") or "?"].append((t, float(step["deviation_pct"])))
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for setting, points in sorted(series.items()):
        points.sort()
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        (line,) = ax.plot(xs, ys, marker="o", ms=3, lw=1, label=setting)
        if len(ys) >= 3:  # noqa: PLR2004 - a spread needs a few points
            mean, sd = statistics.fmean(ys), statistics.stdev(ys)
            for limit in (mean - 2 * sd, mean + 2 * sd):
                ax.axhline(limit, color=line.get_color(), ls=":", lw=0.8)
    for band, colour in ((action, "orange"), (fail, "red")):
        if band is not None:
            ax.axhline(band, color=colour, lw=1, ls="--")
            ax.axhline(-band, color=colour, lw=1, ls="--")
    ax.axhline(0, color="black", lw=0.5)
    ax.set_ylabel("deviation (%)")
    ax.set_title(title or "Constancy (dashed: action/fail bands; dotted: ±2 SD of own history)",
                 fontsize=9)  # fmt: skip
    if series:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no constancy records", ha="center", transform=ax.transAxes)
    fig.autofmt_xdate()
    return _png(fig)


def linearity_plot(record: dict[str, Any]) -> bytes:
    """Activity vs time on a log axis with the fit; residuals (%) below, with the bands."""
    plt = _pyplot()
    lin = record["linearity"]
    points = lin["points"]
    hours = [p.get("elapsed_s", 0.0) / 3600 for p in points]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(8, 5), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    good = [p["result"] == "pass" for p in points]
    top.semilogy(hours, [p["fit_mbq"] for p in points], "-", lw=1, label="fitted exponential")
    top.semilogy([h for h, g in zip(hours, good, strict=True) if g],
                 [p["measured_mbq"] for p, g in zip(points, good, strict=True) if g],
                 "o", ms=3, label="measured")  # fmt: skip
    bad = [(h, p) for h, p in zip(hours, points, strict=True) if p["result"] != "pass"]
    if bad:
        top.semilogy([h for h, _ in bad], [p["measured_mbq"] for _, p in bad], "x", color="red",
                     ms=6, label="outside tolerance")  # fmt: skip
    top.set_ylabel("activity (MBq)")
    top.legend(fontsize=7)
    top.set_title(f"Linearity, decay method ({lin['nuclide']})", fontsize=9)
    bottom.plot(hours, [p["deviation_pct"] for p in points], "o-", ms=3, lw=0.8)
    tol = record.get("tolerance") or {}
    for band, colour in ((tol.get("action_pct"), "orange"), (tol.get("fail_pct"), "red")):
        if band is not None:
            bottom.axhline(band, color=colour, ls="--", lw=1)
            bottom.axhline(-band, color=colour, ls="--", lw=1)
    bottom.axhline(0, color="black", lw=0.5)
    bottom.set_ylabel("residual (%)")
    bottom.set_xlabel("elapsed (h)")
    return _png(fig)


# ------------------------------------------------------------------ reports
def _tests(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("record", "test") == "test"]


def _reviews_index(records: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    index: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("record") == "review" and isinstance(r.get("reviews"), dict):
            index[r["reviews"]["id"]].append(r)
    return index


def _summary_table(doc: _Doc, tests: Sequence[dict[str, Any]], zone: ZoneInfo | None,
                   reviews: dict[str, list[dict[str, Any]]]) -> None:  # fmt: skip
    rows: list[list[Any]] = [
        ["time", "device", "test", "deviation", "result", "performed by", "reviewed/approved"]
    ]
    for r in tests:
        performed = ", ".join(s["name"] for s in r.get("signatures", []))
        later = ", ".join(
            f"{s['meaning']}: {s['name']}" for rv in reviews.get(r["id"], [])
            for s in rv.get("signatures", [])
        )  # fmt: skip
        deviation = "—" if r.get("deviation_pct") is None else f"{r['deviation_pct']:+.2f} %"
        rows.append([_local(r["t"], zone), r["device"], r["test"], deviation,
                     r.get("result", ""), performed, later or "—"])  # fmt: skip
    doc.table(rows, [30, 20, 20, 18, 14, 38, 40])


def qc_report(
    records: Sequence[dict[str, Any]],
    *,
    site: str = "",
    zone: ZoneInfo | None = None,
    period: str = "",
    release: dict[str, dict[str, Any]] | None = None,
) -> bytes:
    """The QC report of `isoedge report qc`: summary, control charts, records, signatures."""
    tests = _tests(records)
    reviews = _reviews_index(records)
    doc = _Doc("Dose calibrator QC records", f"Site {site} — {period}".strip(" —"))
    if release:
        doc.h2("Release state")
        rows: list[list[Any]] = [["device", "release", "since", "reason"]]
        rows += [[d, s.get("release"), s.get("since"), s.get("reason")] for d, s in release.items()]
        doc.table(rows, [24, 20, 36, 100])
    doc.h2(f"Summary: {len(tests)} tests")
    counts: dict[str, int] = defaultdict(int)
    for r in tests:
        counts[str(r.get("result"))] += 1
    doc.p(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "no QC records")
    _summary_table(doc, tests, zone, reviews)
    for device in sorted({r["device"] for r in tests}):
        mine = [r for r in tests if r["device"] == device]
        if any(r["test"] == "constancy" for r in mine):
            doc.h2(f"Constancy control chart — {device}")
            doc.image(control_chart(mine), 170)
    doc.page_break()
    doc.h2("Records")
    for record in tests:
        _record_section(doc, record, reviews.get(record["id"], []), zone)
    return doc.pdf()


def daily_sheet(
    records: Sequence[dict[str, Any]], device: str, day: date, *, site: str = "",
    zone: ZoneInfo | None = None,
) -> bytes:  # fmt: skip
    """One calibrator's QC sheet of one (local) day, with every signature."""
    reviews = _reviews_index(records)

    def local_day(r: dict[str, Any]) -> date:
        t = datetime.fromisoformat(r["t"])
        return (t.astimezone(zone) if zone else t.astimezone(UTC)).date()

    tests = [r for r in _tests(records) if r["device"] == device and local_day(r) == day]
    doc = _Doc(f"Daily QC sheet — {device} — {day.isoformat()}", f"Site {site}".strip())
    _summary_table(doc, tests, zone, reviews)
    for record in tests:
        _record_section(doc, record, reviews.get(record["id"], []), zone)
    if not tests:
        doc.p("No QC test recorded on this day: the calibrator was not released.")
    return doc.pdf()


def linearity_report(
    record: dict[str, Any], reviews: Sequence[dict[str, Any]] = (), *, site: str = "",
    zone: ZoneInfo | None = None,
) -> bytes:  # fmt: skip
    """One linearity record with its plot, points table and signatures."""
    doc = _Doc(f"Linearity report — {record['device']}", f"Site {site}".strip())
    _record_section(doc, record, reviews, zone)
    rows: list[list[Any]] = [
        ["point", "elapsed (h)", "measured (MBq)", "fit (MBq)", "deviation", "result"]
    ]
    rows += [
        [p["index"], f"{p.get('elapsed_s', 0) / 3600:.2f}", _fmt(p["measured_mbq"], 6),
         _fmt(p["fit_mbq"], 6), f"{p['deviation_pct']:+.2f} %", p["result"]]
        for p in record["linearity"]["points"]
    ]  # fmt: skip
    doc.table(rows, [14, 22, 32, 32, 22, 18])
    return doc.pdf()


def monthly_summary(
    records: Sequence[dict[str, Any]], device: str, year: int, month: int, *, site: str = "",
    zone: ZoneInfo | None = None,
) -> bytes:  # fmt: skip
    """A month of one calibrator's QC: summary table, control chart, signatures per record."""
    def in_month(r: dict[str, Any]) -> bool:
        t = datetime.fromisoformat(r["t"])
        t = t.astimezone(zone) if zone else t.astimezone(UTC)
        return (t.year, t.month) == (year, month)

    mine = [r for r in records if r["device"] == device and in_month(r)]
    return qc_report(mine, site=site, zone=zone, period=f"{device}, {year}-{month:02d}")


def audit_extract(
    items: Sequence[dict[str, Any]],
    *,
    site: str = "",
    period: str = "",
    zone: ZoneInfo | None = None,
    chain_ok: bool | None = None,
    reviews: Sequence[dict[str, Any]] = (),
) -> bytes:
    """The audit trail of a period; `reviews`: signed audit-trail review records of it."""
    doc = _Doc("Audit-trail extract", f"Site {site} — {period}".strip(" —"))
    if chain_ok is not None:
        doc.p("Hash chain of the audit trail: " + ("intact." if chain_ok else "BROKEN."))
    doc.p(f"{len(items)} entries.")
    rows: list[list[Any]] = [["time", "event", "actor", "subject", "old → new", "reason"]]
    for item in items:
        change = ""
        if item.get("old") is not None or item.get("new") is not None:
            change = f"{_short(item.get('old'))} → {_short(item.get('new'))}"
        rows.append([_local(item["t"], zone), item.get("event", ""), item.get("actor", ""),
                     item.get("subject", ""), change, item.get("reason") or ""])  # fmt: skip
    doc.table(rows, [28, 30, 22, 30, 40, 32])
    if reviews:
        doc.h2("Review of this audit trail")
        for review in reviews:
            doc.table(_signature_rows(review, []), [18, 56, 38, 44, 26])
    return doc.pdf()


def _short(value: Any, limit: int = 80) -> str:
    text = "—" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = [
    "audit_extract",
    "control_chart",
    "daily_sheet",
    "linearity_plot",
    "linearity_report",
    "monthly_summary",
    "qc_report",
]
