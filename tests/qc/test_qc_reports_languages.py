"""The daily QC sheet in each language: its text in the expected script, every glyph embedded."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import zlib
from datetime import datetime
from pathlib import Path

import matplotlib as mpl
import pytest
from fontTools.ttLib import TTFont
from qc_harness import PASSWORDS, QCDesk

from agent.qc.reports import daily_sheet

DEJAVU = Path(mpl.get_data_path()) / "fonts" / "ttf"
# Words of each language's sheet, and the letters only that language's alphabet has.
EXPECTED = {
    "ru": (["Ежедневный лист КК", "Стабильность", "Фон", "выполнено", "соответствует",
            "стр. 1 из"], set()),
    "kk": (["Күнделікті СБ парағы", "Тұрақтылық", "орындалды", "сәйкес", "беттің 1-беті"],
           set("әғқңөұүі")),
    "ky": (["Күнүмдүк СК барагы", "Туруктуулук", "аткарылды", "ылайык", "беттин 1-бети"],
           set("өү")),
    "en": (["Daily QC sheet", "Constancy", "Background", "performed", "PASS", "page 1 of"],
           set()),
}


@pytest.fixture(scope="module")
def dejavu_chars() -> set[int]:
    chars: set[int] = set()
    for name in ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf"):
        font = TTFont(DEJAVU / name)
        chars |= set(font.getBestCmap())
    return chars


def shown_fonts(pdf: bytes) -> set[str]:
    """The fonts of the PDF's text blocks that show glyphs (Tj/TJ)."""
    shown: set[str] = set()
    for raw in re.findall(rb"stream\r?\n(.*?)endstream", pdf, re.DOTALL):
        try:
            data = zlib.decompress(base64.a85decode(raw.strip(), adobe=True))
        except ValueError:
            try:
                data = zlib.decompress(raw.strip())
            except zlib.error:
                continue
        except zlib.error:
            continue
        font = None
        for block in re.findall(rb"BT(.*?)ET", data, re.DOTALL):
            for token in re.finditer(rb"/(\S+) [\d.]+ Tf|T[jJ]", block):
                if token.group(1):
                    font = token.group(1).decode()
                elif font is not None:
                    shown.add(font)
    return shown


def pdf_tool(tool: str, path: Path, *args: str) -> str:
    assert shutil.which(tool), f"{tool} missing: apt-get install poppler-utils"
    return subprocess.run([tool, *args, str(path), *(["-"] if tool == "pdftotext" else [])],
                          capture_output=True, text=True, check=True).stdout


async def test_daily_sheet_in_each_language_with_embedded_glyphs(tmp_path, dejavu_chars):
    async with QCDesk(tmp_path) as desk:
        manager = desk.manager
        for test in ("background", "constancy"):
            run = manager.start_test("dc1", test, by="tess")
            await desk.operate(run)
            record = await manager.sign_run(run.id, "tess", PASSWORDS["tess"])
        records = await manager.records()
    zone = desk.config.zone
    day = datetime.fromisoformat(record["t"]).astimezone(zone).date()
    check_sheets(records, day, zone, tmp_path, dejavu_chars)


def check_sheets(records, day, zone, tmp_path, dejavu_chars) -> None:
    # The embedded fonts carry every Kazakh and Kyrgyz letter (shha too, rare in the sheet).
    assert {ord(c) for c in "әғқңөұүһіӘҒҚҢӨҰҮҺІ"} <= dejavu_chars
    for lang, (words, own_letters) in EXPECTED.items():
        path = tmp_path / f"daily-{lang}.pdf"
        path.write_bytes(daily_sheet(records, "dc1", day, site="lab", zone=zone, lang=lang))
        text = pdf_tool("pdftotext", path, "-layout")
        for word in words:
            assert word in text, (lang, word)
        letters = set(re.findall(r"[^\W\d_]", text))
        cyrillic = {c for c in letters if "\u0400" <= c <= "\u04ff"}
        if lang == "en":
            assert not cyrillic, cyrillic
        else:
            # The prose is Cyrillic: more Cyrillic letters than Latin ones (the Latin ones are
            # data: hashes, ids, zone names, the tolerance basis from the configuration).
            assert len(re.findall(r"[\u0400-\u04ff]", text)) > len(re.findall(r"[A-Za-z]", text))
            assert own_letters <= cyrillic, (lang, own_letters - cyrillic)
        # Every character printed is in the embedded DejaVu fonts (no blank boxes).
        missing = {c for c in text if not c.isspace() and ord(c) not in dejavu_chars}
        assert not missing, (lang, missing)
        fonts = pdf_tool("pdffonts", path)
        rows = [line.split() for line in fonts.splitlines()[2:] if line.strip()]
        # name type encoding emb sub uni object ID: "emb" is the 5th column from the right.
        embedded = {r[0].split("+")[-1] for r in rows if r[-5] == "yes"}
        assert embedded == {"DejaVuSans", "DejaVuSans-Bold"}, fonts
        # Text is shown only in the embedded fonts (reportlab's default Helvetica resource is
        # selected at the top of each page but never shows a glyph).
        assert shown_fonts(path.read_bytes()) <= {"F2+0", "F3+0"}
        assert "page 1 of" in text or "1 из" in text or "1-беті" in text or "1-бети" in text
