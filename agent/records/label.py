"""The syringe or vial label of a dispensed dose, as a PDF (reportlab; the reports' fonts).

One label (70 by 45 mm): the radiation trefoil (ISO 361), the radiopharmaceutical and its
nuclide, the activity at a stated time (the prescription's, in the site's zone with its name)
and at measurement, the volume, the batch and its expiry, the patient's hospital number and the
record id. Texts are the catalog's, in the label's language.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any

from agent.core.i18n import choose, format_datetime, format_number, translate
from agent.qc.reports import _FONT, _FONT_BOLD, _register_fonts

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

WIDTH_MM, HEIGHT_MM = 70.0, 45.0


def _trefoil(canvas: Any, x: float, y: float, r: float) -> None:
    """The ISO 361 trefoil: black on yellow, centre disc r/5, blades from 1.5 r/5 to r."""
    from reportlab.lib import colors  # noqa: PLC0415

    canvas.setFillColor(colors.HexColor("#ffd800"))
    canvas.circle(x, y, r * 1.15, stroke=0, fill=1)
    canvas.setFillColor(colors.black)
    for start in (0.0, 120.0, 240.0):
        path = canvas.beginPath()
        inner = r * 0.3
        a0, a1 = math.radians(start + 30), math.radians(start + 90)
        path.moveTo(x + inner * math.cos(a0), y + inner * math.sin(a0))
        path.arcTo(x - r, y - r, x + r, y + r, startAng=start + 30, extent=60)
        path.lineTo(x + inner * math.cos(a1), y + inner * math.sin(a1))
        path.arcTo(x - inner, y - inner, x + inner, y + inner, startAng=start + 90, extent=-60)
        path.close()
        canvas.drawPath(path, stroke=0, fill=1)
    canvas.circle(x, y, r * 0.2, stroke=0, fill=1)


def label_pdf(record: dict[str, Any], *, zone: ZoneInfo | None, lang: str = "en") -> bytes:
    """The label of one dispensing record."""
    from reportlab.lib.units import mm  # noqa: PLC0415
    from reportlab.pdfgen.canvas import Canvas  # noqa: PLC0415

    _register_fonts()
    lang = choose(lang)

    def tr(message: str, **params: Any) -> str:
        return translate(lang, message, **params)

    def mbq(value: Any) -> str:
        return format_number(float(value), lang, significant=4)

    out = io.BytesIO()
    canvas = Canvas(out, pagesize=(WIDTH_MM * mm, HEIGHT_MM * mm), initialFontName=_FONT)
    canvas.setTitle(tr("Dose label"))
    canvas.setAuthor("IsoEdge")
    _trefoil(canvas, 9 * mm, (HEIGHT_MM - 9) * mm, 5.5 * mm)
    canvas.setFont(_FONT, 6.5)
    canvas.drawString(3 * mm, (HEIGHT_MM - 18) * mm, tr("RADIOACTIVE"))
    canvas.setFont(_FONT_BOLD, 11)
    canvas.drawString(18 * mm, (HEIGHT_MM - 8) * mm, str(record.get("product") or ""))
    canvas.setFont(_FONT, 7)
    canvas.drawString(18 * mm, (HEIGHT_MM - 12) * mm, str(record.get("nuclide") or ""))
    scheduled = record.get("scheduled")
    lines = [
        (_FONT_BOLD, 7.5, tr("{activity} MBq at {time}",
                           activity=mbq(record["activity_at_scheduled_mbq"]),
                           time=format_datetime(str(scheduled), lang, zone, seconds=False))),
        (_FONT, 7, tr("measured {activity} MBq at {time}", activity=mbq(record["measured_mbq"]),
                      time=format_datetime(str(record["measured_at"]), lang, zone,
                                           seconds=False))),
        (_FONT, 7, tr("volume {volume} mL", volume=format_number(float(record["volume_ml"]),
                                                                 lang, significant=3))),
        (_FONT, 7, tr("batch {batch}", batch=record.get("batch_id"))),
        (_FONT, 7, tr("expiry {time}", time=format_datetime(str(record.get("expiry")), lang,
                                                            zone, seconds=False))
         if record.get("expiry") else ""),
        (_FONT, 7, tr("patient {number}", number=record.get("patient", {}).get(
            "hospital_number", ""))),
    ]  # fmt: skip
    y = (HEIGHT_MM - 22) * mm
    for font, size, text in lines:
        if not text:
            continue
        canvas.setFont(font, size)
        canvas.drawString(3 * mm, y, text)
        y -= size + 2.5  # points
    canvas.setFont(_FONT, 5)
    canvas.drawString(3 * mm, 2 * mm, tr("record {id}", id=record["id"]))
    canvas.showPage()
    canvas.save()
    return out.getvalue()


__all__ = ["label_pdf"]
