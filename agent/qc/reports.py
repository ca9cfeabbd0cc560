"""PDF reports of the QC programme (reportlab; charts with matplotlib): what inspectors read.

- `daily_sheet`: one calibrator's tests of one day, with expected/measured/deviation per step.
- `linearity_report`: one linearity record: activity vs time (log axis) with the fit, residuals.
- `monthly_summary`: a month of one calibrator's tests, the constancy control chart.
- `audit_extract`: the audit trail of a period (and the signed review of it, if any).
- `qc_report`: what `isoedge report qc` writes: summary, control charts, every record with
  its steps, linearity plots, and every signature (performed, reviewed, approved).

Every function returns the PDF as bytes and does no I/O of its own beyond reading fonts, so
the console can serve it and the CLI can write it. Text uses DejaVu Sans (shipped with
matplotlib, embedded in every PDF) so ±, µ, ½ and the Kazakh and Kyrgyz letters (U+04D9,
U+0493, U+049B, U+04A3, U+04E9, U+04B1, U+04AF, U+04BB, U+0456) print as such. Records' own
hashes are printed in full with each signature so a reader can check the binding. Each report
is in one of the catalog's languages (`lang`); times are the site's, with its zone's name, and
UTC beside them in the signatures.
"""

from __future__ import annotations

import io
import json
import math
import statistics
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.core.i18n import N_, choose, format_datetime, format_number, translate
from agent.core.messages import render_reason, render_reasons

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

    def __init__(self, title: str, subtitle: str = "", *, lang: str = "en") -> None:
        _register_fonts()
        self.lang = choose(lang)
        from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet  # noqa: PLC0415

        base = getSampleStyleSheet()
        self.title = title
        self.styles = {
            "h1": ParagraphStyle("h1", parent=base["Heading1"], fontName=_FONT_BOLD, fontSize=16),
            "h2": ParagraphStyle("h2", parent=base["Heading2"], fontName=_FONT_BOLD, fontSize=12),
            "h3": ParagraphStyle("h3", parent=base["Heading3"], fontName=_FONT_BOLD, fontSize=10),
            "p": ParagraphStyle("p", parent=base["BodyText"], fontName=_FONT, fontSize=8.5,
                                leading=11),
            # Table cells wrap between words only ("Severit y" is not a word).
            "small": ParagraphStyle("small", parent=base["BodyText"], fontName=_FONT,
                                    fontSize=7, leading=9, splitLongWords=False),
        }  # fmt: skip
        self.story: list[Flowable] = []
        self.flagged: set[str] = {self.tr("fail"), self.tr("action"), "FAIL"}
        self.h1(title)
        if subtitle:
            self.p(subtitle)

    def tr(self, message: str, **params: Any) -> str:
        """`message` in the report's language."""
        return translate(self.lang, message, **params)

    def num(self, value: Any, digits: int = 4) -> str:
        """A number with the language's decimal sign, `digits` significant digits."""
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "—"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return format_number(float(value), self.lang, significant=digits)
        return str(value)

    def mbq(self, value: Any) -> str:
        """An activity in MBq to the calibrators' resolution (0.001 MBq)."""
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "—"
        return format_number(float(value), self.lang, decimals=3)

    def pct(self, value: Any) -> str:
        """A signed percentage to two decimals."""
        if value is None:
            return "—"
        text = format_number(float(value), self.lang, decimals=2)
        return f"{'' if text.startswith(('-', chr(0x2212))) else '+'}{text} %"

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
        fail_words, action_word = {self.tr("fail"), "FAIL"}, self.tr("action")
        for index, row in enumerate(rows[1:], start=1):
            words = {str(c) for c in row}
            if words & fail_words:
                style.append(("BACKGROUND", (0, index), (-1, index), colors.HexColor("#fde2e2")))
            elif action_word in words:
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
        from reportlab.pdfgen.canvas import Canvas  # noqa: PLC0415
        from reportlab.platypus import SimpleDocTemplate  # noqa: PLC0415

        out = io.BytesIO()
        stamp = format_datetime(datetime.now(UTC), self.lang, None, seconds=False)
        title = self.title
        footer_text = f"IsoEdge — {title} — " + self.tr("generated {time}", time=stamp)
        page_text = self.tr("page {page} of {pages}", page="{page}", pages="{pages}")

        class _NumberedCanvas(Canvas):  # type: ignore[misc]  # reportlab is untyped
            """Holds each page until the end so that every footer can say "page x of y"."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                # The embedded font from the first page on (not reportlab's Helvetica).
                kwargs.setdefault("initialFontName", _FONT)
                super().__init__(*args, **kwargs)
                self._pages: list[dict[str, Any]] = []

            def showPage(self) -> None:  # noqa: N802 - reportlab's API
                self._pages.append(dict(self.__dict__))
                self._startPage()

            def save(self) -> None:
                for number, state in enumerate(self._pages, start=1):
                    self.__dict__.update(state)
                    self.saveState()
                    self.setFont(_FONT, 7)
                    self.drawString(15 * mm, 10 * mm, footer_text)
                    self.drawRightString(195 * mm, 10 * mm, page_text.format(
                        page=number, pages=len(self._pages)))
                    self.restoreState()
                    super().showPage()
                super().save()

        doc = SimpleDocTemplate(
            out, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=15 * mm,
            bottomMargin=18 * mm, title=title, author="IsoEdge", lang=self.lang,
        )  # fmt: skip
        if not self.story:
            self.p(self.tr("(empty)"))
        doc.build(self.story, canvasmaker=_NumberedCanvas)
        return out.getvalue()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _local(doc: _Doc, t: str, zone: ZoneInfo | None) -> str:
    return format_datetime(t, doc.lang, zone)


def _code(doc: _Doc, value: Any) -> str:
    """A record's code (pass, on_hold, performed…) as the report's language says it."""
    text = str(value or "")
    names = {"on_hold": doc.tr("ON HOLD"), "released": doc.tr("released")}
    return names.get(text) or (doc.tr(text) if text else "")


# ------------------------------------------------------------------ record sections
def _signature_rows(doc: _Doc, record: dict[str, Any],
                    reviews: Sequence[dict[str, Any]]) -> list[list[str]]:  # fmt: skip
    _ = doc.tr
    rows: list[list[Any]] = [[_("meaning"), _("printed name (user, role)"), _("site time"),
                              _("UTC time"), _("record SHA-256")]]  # fmt: skip
    zone_name = None
    if record.get("comment"):
        rows.append([_("comment"), record["comment"], "", "", ""])
    for item in [record, *reviews]:
        for s in item.get("signatures", []):
            zone_name = s.get("timezone") or zone_name
            t = s.get("t", "")
            rows.append([
                _code(doc, s.get("meaning", "")),
                f"{s.get('name', '')} ({s.get('user', '')}, {_code(doc, s.get('role', ''))})",
                format_datetime(t, doc.lang, _zone_named(s.get("timezone"))) if t else "",
                format_datetime(t, doc.lang, None) if t else "",
                _grouped(str(s.get("record_sha256", ""))),
            ])  # fmt: skip
        if item is not record and item.get("comment"):
            rows.append([_("comment"), item["comment"], "", "", ""])
    return rows


def _grouped(digest: str, size: int = 16) -> str:
    """A full hash in groups that a table cell can wrap between."""
    return " ".join(digest[i:i + size] for i in range(0, len(digest), size))


def _zone_named(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    from agent.core.zones import site_zone  # noqa: PLC0415

    try:
        return site_zone(name)
    except (ValueError, OSError):
        return None


def _record_section(
    doc: _Doc, record: dict[str, Any], reviews: Sequence[dict[str, Any]], zone: ZoneInfo | None
) -> None:
    _ = doc.tr
    test = record.get("test", "?")
    doc.h3(_("{test} — {device} — {time} — result {result}", test=_test_name(doc, test),
             device=record.get("device"), time=_local(doc, record["t"], zone),
             result=_code(doc, record.get("result", "?")).upper()))
    source = record.get("source")
    if source:
        doc.p(_("Source {id} ({nuclide}), certified {activity} MBq on {date}, certificate "
                "{certificate}.", id=source.get("id"), nuclide=source.get("nuclide"),
                activity=doc.num(source.get("certified_mbq")),
                date=_day(doc, source.get("certified_date")),
                certificate=source.get("certificate")))
    tol = record.get("tolerance") or {}
    if tol.get("action_pct") is not None:
        doc.p(_("Tolerance: pass within ±{action} %, action to ±{fail} %, fail beyond. Basis: "
                "{basis}.", action=doc.num(tol["action_pct"]), fail=doc.num(tol["fail_pct"]),
                basis=tol.get("basis")), small=True)
    elif tol.get("max_mbq") is not None:
        doc.p(_("Limit: {limit} MBq. Basis: {basis}.", limit=doc.num(tol["max_mbq"]),
                basis=tol.get("basis")), small=True)
    rows: list[list[Any]] = [[_("step"), _("setting"), _("expected (MBq)"), _("u (MBq)"),
                              _("measured (MBq)"), _("deviation"), _("result"),
                              _("readings")]]  # fmt: skip
    for step in record.get("steps", []):
        rows.append([  # noqa: PERF401
            step.get("index"),
            step.get("setting") or step.get("container") or _code(doc, step.get("kind")),
            doc.mbq(step.get("expected_mbq")),
            doc.num(step.get("uncertainty_mbq"), 2),
            doc.mbq(step.get("measured_mbq")),
            doc.pct(step.get("deviation_pct")),
            _code(doc, step.get("result")),
            len(step.get("readings") or []),
        ])  # fmt: skip
    if test != "linearity":
        doc.table(rows, [10, 22, 22, 16, 22, 20, 26, 20])
    factors = record.get("correction_factors")
    if factors:
        doc.p(_("Correction factors: {factors}", factors=", ".join(
            f"{k} {format_number(v, doc.lang, decimals=4)}" for k, v in factors.items())))
    lin = record.get("linearity")
    if lin:
        doc.p(_("{n} points from {high} MBq to {low} MBq; fitted half-life {fit} ± {u} h vs "
                "table {table} h ({deviation}).", n=len(lin["points"]),
                high=doc.num(lin["range_mbq"][1]), low=doc.num(lin["range_mbq"][0]),
                fit=format_number(lin["half_life_fit_s"] / 3600, doc.lang, decimals=4),
                u=format_number(lin["half_life_fit_uncertainty_s"] / 3600, doc.lang, decimals=4),
                table=format_number(lin["half_life_table_s"] / 3600, doc.lang, decimals=4),
                deviation=doc.pct(lin["half_life_deviation_pct"])))
        if lin.get("failing_points"):
            doc.p(_("Outside tolerance: {points}", points="; ".join(lin["failing_points"])))
        doc.image(linearity_plot(record, lang=doc.lang), 165)
    doc.p(_("Record {id}, content SHA-256 of the record without signatures below.",
            id=record["id"]), small=True)
    doc.table(_signature_rows(doc, record, reviews), [24, 40, 30, 30, 56])
    doc.space()


def _day(doc: _Doc, value: Any) -> str:
    """A certificate's date as the language writes a day."""
    from agent.core.i18n import format_date  # noqa: PLC0415

    try:
        return format_date(str(value), doc.lang, None)
    except ValueError:
        return str(value or "—")


def _test_name(doc: _Doc, test: str) -> str:
    _ = doc.tr
    return {"background": _("Background"), "constancy": _("Constancy"),
            "accuracy": _("Accuracy"), "geometry": _("Geometry"),
            "linearity": _("Linearity (decay)")}.get(test, test)


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


def control_chart(records: Sequence[dict[str, Any]], title: str = "", *,  # noqa: C901
                  lang: str = "en", zone: ZoneInfo | None = None) -> bytes:  # fmt: skip
    """Constancy deviation per setting over time, with action and fail bands and ±2 SD."""
    plt = _pyplot()
    from matplotlib.dates import DateFormatter  # noqa: PLC0415

    def _(message: str) -> str:
        return translate(lang, message)
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
    ax.set_ylabel(_("deviation (%)"))
    ax.set_title(title or _("Constancy (dashed: action/fail bands; dotted: ±2 SD of own history)"),
                 fontsize=9)  # fmt: skip
    if series:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, _("no constancy records"), ha="center", transform=ax.transAxes)
    # The time axis in the site's zone, in the language's date order, named.
    day_first = lang != "en"
    pattern = "%d.%m %H:%M" if day_first else "%m-%d %H:%M"
    formatter = DateFormatter(pattern, tz=zone or UTC)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_formatter(formatter)
    ax.set_xlabel(zone.key if zone is not None else "UTC", fontsize=7)
    fig.autofmt_xdate()
    return _png(fig)


def linearity_plot(record: dict[str, Any], *, lang: str = "en") -> bytes:
    """Activity vs time on a log axis with the fit; residuals (%) below, with the bands."""
    plt = _pyplot()

    def _(message: str, **params: Any) -> str:
        return translate(lang, message, **params)

    lin = record["linearity"]
    points = lin["points"]
    hours = [p.get("elapsed_s", 0.0) / 3600 for p in points]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(8, 5), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    good = [p["result"] == "pass" for p in points]
    top.semilogy(hours, [p["fit_mbq"] for p in points], "-", lw=1, label=_("fitted exponential"))
    top.semilogy([h for h, g in zip(hours, good, strict=True) if g],
                 [p["measured_mbq"] for p, g in zip(points, good, strict=True) if g],
                 "o", ms=3, label=_("measured"))  # fmt: skip
    bad = [(h, p) for h, p in zip(hours, points, strict=True) if p["result"] != "pass"]
    if bad:
        top.semilogy([h for h, _ in bad], [p["measured_mbq"] for _, p in bad], "x", color="red",
                     ms=6, label=_("outside tolerance"))  # fmt: skip
    top.set_ylabel(_("activity (MBq)"))
    top.legend(fontsize=7)
    top.set_title(_("Linearity, decay method ({nuclide})", nuclide=lin["nuclide"]), fontsize=9)
    bottom.plot(hours, [p["deviation_pct"] for p in points], "o-", ms=3, lw=0.8)
    tol = record.get("tolerance") or {}
    for band, colour in ((tol.get("action_pct"), "orange"), (tol.get("fail_pct"), "red")):
        if band is not None:
            bottom.axhline(band, color=colour, ls="--", lw=1)
            bottom.axhline(-band, color=colour, ls="--", lw=1)
    bottom.axhline(0, color="black", lw=0.5)
    bottom.set_ylabel(_("residual (%)"))
    bottom.set_xlabel(_("elapsed (h)"))
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
    _ = doc.tr
    rows: list[list[Any]] = [[_("time"), _("device"), _("test"), _("deviation"), _("result"),
                              _("performed by"), _("reviewed/approved")]]  # fmt: skip
    for r in tests:
        performed = ", ".join(s["name"] for s in r.get("signatures", []))
        later = ", ".join(
            f"{_code(doc, s['meaning'])}: {s['name']}" for rv in reviews.get(r["id"], [])
            for s in rv.get("signatures", [])
        )  # fmt: skip
        rows.append([_local(doc, r["t"], zone), r["device"], _test_name(doc, r["test"]),
                     doc.pct(r.get("deviation_pct")), _code(doc, r.get("result", "")),
                     performed, later or "—"])  # fmt: skip
    doc.table(rows, [28, 18, 26, 20, 26, 32, 30])


def qc_report(
    records: Sequence[dict[str, Any]],
    *,
    site: str = "",
    zone: ZoneInfo | None = None,
    period: str = "",
    release: dict[str, dict[str, Any]] | None = None,
    lang: str = "en",
) -> bytes:
    """The QC report of `isoedge report qc`: summary, control charts, records, signatures."""
    tests = _tests(records)
    reviews = _reviews_index(records)
    doc = _Doc(translate(lang, "Dose calibrator QC records"), _site_line(lang, site, period),
               lang=lang)
    _ = doc.tr
    if release:
        doc.h2(_("Release state"))
        rows: list[list[Any]] = [[_("device"), _("release"), _("since"), _("reason")]]
        rows += [[d, _code(doc, s.get("release")),
                  _local(doc, s["since"], zone) if s.get("since") else "—",
                  render_reasons(s, doc.lang, zone)]
                 for d, s in release.items()]  # fmt: skip
        doc.table(rows, [24, 20, 36, 100])
    doc.h2(_("Summary: tests: {n}", n=len(tests)))
    counts: dict[str, int] = defaultdict(int)
    for r in tests:
        counts[str(r.get("result"))] += 1
    doc.p(", ".join(f"{_code(doc, k)}: {v}" for k, v in sorted(counts.items()))
          or _("no QC records"))
    _summary_table(doc, tests, zone, reviews)
    for device in sorted({r["device"] for r in tests}):
        mine = [r for r in tests if r["device"] == device]
        if any(r["test"] == "constancy" for r in mine):
            doc.h2(_("Constancy control chart — {device}", device=device))
            doc.image(control_chart(mine, lang=doc.lang, zone=zone), 170)
    doc.page_break()
    doc.h2(_("Records"))
    for record in tests:
        _record_section(doc, record, reviews.get(record["id"], []), zone)
    return doc.pdf()


def _site_line(lang: str, site: str, period: str = "") -> str:
    parts = [translate(lang, "Site {site}", site=site) if site else "", period]
    return " — ".join(p for p in parts if p)


def daily_sheet(
    records: Sequence[dict[str, Any]], device: str, day: date, *, site: str = "",
    zone: ZoneInfo | None = None, lang: str = "en",
) -> bytes:  # fmt: skip
    """One calibrator's QC sheet of one (local) day, with every signature."""
    reviews = _reviews_index(records)

    def local_day(r: dict[str, Any]) -> date:
        t = datetime.fromisoformat(r["t"])
        return (t.astimezone(zone) if zone else t.astimezone(UTC)).date()

    tests = [r for r in _tests(records) if r["device"] == device and local_day(r) == day]
    from agent.core.i18n import format_date  # noqa: PLC0415

    noon = datetime(day.year, day.month, day.day, 12, tzinfo=zone or UTC)
    doc = _Doc(translate(lang, "Daily QC sheet — {device} — {day}", device=device,
                         day=format_date(noon, lang, zone)),
               _site_line(lang, site, translate(lang, "times in {zone}",
                                                zone=zone.key if zone else "UTC")), lang=lang)
    _summary_table(doc, tests, zone, reviews)
    for record in tests:
        _record_section(doc, record, reviews.get(record["id"], []), zone)
    if not tests:
        doc.p(doc.tr("No QC test recorded on this day: the calibrator was not released."))
    return doc.pdf()


def linearity_report(
    record: dict[str, Any], reviews: Sequence[dict[str, Any]] = (), *, site: str = "",
    zone: ZoneInfo | None = None, lang: str = "en",
) -> bytes:  # fmt: skip
    """One linearity record with its plot, points table and signatures."""
    doc = _Doc(translate(lang, "Linearity report — {device}", device=record["device"]),
               _site_line(lang, site), lang=lang)
    _ = doc.tr
    _record_section(doc, record, reviews, zone)
    rows: list[list[Any]] = [[_("point"), _("elapsed (h)"), _("measured (MBq)"), _("fit (MBq)"),
                              _("deviation"), _("result")]]  # fmt: skip
    rows += [
        [p["index"], format_number(p.get("elapsed_s", 0) / 3600, doc.lang, decimals=2),
         doc.num(p["measured_mbq"], 6), doc.num(p["fit_mbq"], 6), doc.pct(p["deviation_pct"]),
         _code(doc, p["result"])]
        for p in record["linearity"]["points"]
    ]  # fmt: skip
    doc.table(rows, [14, 22, 32, 32, 22, 18])
    return doc.pdf()


def monthly_summary(
    records: Sequence[dict[str, Any]], device: str, year: int, month: int, *, site: str = "",
    zone: ZoneInfo | None = None, lang: str = "en",
) -> bytes:  # fmt: skip
    """A month of one calibrator's QC: summary table, control chart, signatures per record."""
    def in_month(r: dict[str, Any]) -> bool:
        t = datetime.fromisoformat(r["t"])
        t = t.astimezone(zone) if zone else t.astimezone(UTC)
        return (t.year, t.month) == (year, month)

    mine = [r for r in records if r["device"] == device and in_month(r)]
    return qc_report(mine, site=site, zone=zone, period=f"{device}, {month:02d}.{year}"
                     if lang != "en" else f"{device}, {year}-{month:02d}", lang=lang)


# The dosage rule's results (record codes) as the report prints them.
DOSAGE_RESULTS = (N_("outside site tolerance"), N_("outside regulatory limit"))


def dispensing_report(
    records: Sequence[dict[str, Any]], *, site: str = "", zone: ZoneInfo | None = None,
    period: str = "", lang: str = "en",
) -> bytes:  # fmt: skip
    """Dispensing records: each measured dose against its prescription.

    With the calibrator's release state at the time and who measured it.
    """
    zone_line = translate(lang, "times in {zone}", zone=zone.key if zone else "UTC")
    doc = _Doc(translate(lang, "Dispensing report"),
               _site_line(lang, site, "; ".join(p for p in (period, zone_line) if p)), lang=lang)
    _ = doc.tr
    held = sum(1 for r in records if r.get("calibrator_release") == "on_hold")
    passed = sum(1 for r in records if r.get("result") == "pass")
    doc.p(_("{n} dispensing records: {passed} within the site's limits, {other} outside; "
            "{held} measured on a calibrator on hold.", n=len(records), passed=passed,
            other=len(records) - passed, held=held))
    rows: list[list[Any]] = [[
        _("time"), _("prescription"), _("nuclide"), _("calibrator"), _("prescribed (MBq)"),
        _("measured (MBq)"), _("at scheduled time (MBq)"), _("deviation"), _("result"),
        _("calibrator state"), _("by"),
    ]]  # fmt: skip
    rows += [
        [_local(doc, r["t"], zone), r.get("prescription", ""), r.get("nuclide", ""),
         r.get("device", ""), doc.mbq(r.get("prescribed_mbq")), doc.mbq(r.get("measured_mbq")),
         doc.mbq(r.get("at_scheduled_mbq")), doc.pct(r.get("deviation_pct")),
         _code(doc, r.get("result")),
         _release_cell(doc, r), r.get("who", "")]
        for r in records
    ]  # fmt: skip
    doc.table(rows, [24, 18, 12, 17, 15, 15, 15, 13, 12, 17, 12])
    if not records:
        doc.p(_("No dispensing record in this period."))
    return doc.pdf()


def _release_cell(doc: _Doc, r: dict[str, Any]) -> str:
    """The calibrator's state at the dose, with a signed override of its hold if there was one."""
    state = _code(doc, r.get("calibrator_release")) or doc.tr("no QC programme")
    override = r.get("held_override")
    if not isinstance(override, dict):
        return state
    return doc.tr("{state}; override signed by {name}: {reason}", state=state,
                  name=override.get("name") or override.get("by") or "",
                  reason=override.get("reason") or "")


def audit_extract(
    items: Sequence[dict[str, Any]],
    *,
    site: str = "",
    period: str = "",
    zone: ZoneInfo | None = None,
    chain_ok: bool | None = None,
    reviews: Sequence[dict[str, Any]] = (),
    lang: str = "en",
) -> bytes:
    """The audit trail of a period; `reviews`: signed audit-trail review records of it."""
    doc = _Doc(translate(lang, "Audit-trail extract"), _site_line(lang, site, period), lang=lang)
    _ = doc.tr
    if chain_ok is not None:
        doc.p(_("Hash chain of the audit trail: intact.") if chain_ok
              else _("Hash chain of the audit trail: BROKEN."))
    doc.p(_("Entries: {n}.", n=len(items)))
    rows: list[list[Any]] = [[_("time"), _("event"), _("actor"), _("subject"), _("old → new"),
                              _("reason")]]  # fmt: skip
    rows += [[_local(doc, item["t"], zone), item.get("event", ""), item.get("actor", ""),
              item.get("subject", ""), changes(item.get("old"), item.get("new"), doc.lang),
              render_reason(item.get("reason"), item.get("reason_params"), doc.lang, zone)]
             for item in items]  # fmt: skip
    doc.table(rows, [28, 30, 22, 30, 40, 32])
    if reviews:
        doc.h2(_("Review of this audit trail"))
        for review in reviews:
            doc.table(_signature_rows(doc, review, []), [24, 40, 30, 30, 56])
            if review.get("comment"):
                doc.p(_("Comment: {comment}", comment=review["comment"]))
    return doc.pdf()


def _plain(value: Any, lang: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return format_number(value, lang)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def changes(old: Any, new: Any, lang: str = "en") -> str:
    """An audit entry's change as "field: old → new" (one line per changed field)."""
    if old is None and new is None:
        return ""
    if isinstance(old, dict) or isinstance(new, dict):
        before = old if isinstance(old, dict) else {}
        after = new if isinstance(new, dict) else {}
        keys = [k for k in dict.fromkeys([*before, *after]) if before.get(k) != after.get(k)]
        return "\n".join(f"{k}: {_plain(before.get(k), lang)} → {_plain(after.get(k), lang)}"
                         for k in keys)
    if old is None:
        return _plain(new, lang)
    return f"{_plain(old, lang)} → {_plain(new, lang)}"


__all__ = [
    "audit_extract",
    "control_chart",
    "daily_sheet",
    "dispensing_report",
    "linearity_plot",
    "linearity_report",
    "monthly_summary",
    "qc_report",
]
