"""The records' PDFs print hold reasons as the catalog's words, not as the record's codes."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest

from agent.qc.reports import _Doc
from agent.records.pdf import value_text
from agent.records.report import records_report

if TYPE_CHECKING:
    from pathlib import Path

HELD = {
    "id": "e" * 32, "kind": "elution", "part": "elution", "t": "2025-03-01T06:00:00Z",
    "site": "site-a", "eluate_id": "TC-2025-03-01-1", "generator_id": "gen-1",
    "result": "fail", "held": True,
    "hold_reasons": ["mo99_over_limit", "canister_factor_validation_overdue"],
    "signatures": [],
}


def _pdftotext(path: Path) -> str:
    tool = shutil.which("pdftotext")
    assert tool, "poppler-utils (pdftotext) is needed"
    out = subprocess.run([tool, "-layout", str(path), "-"], capture_output=True, check=True,
                         text=True, timeout=60)
    return " ".join(out.stdout.split())


@pytest.mark.parametrize(("lang", "words"), [
    ("ru", ["Mo-99 выше предела", "проверка коэффициента контейнера просрочена"]),
    ("kk", ["Mo-99 шектен жоғары", "контейнер коэффициентін тексеру мерзімі өтті"]),
    ("en", ["Mo-99 over the limit"]),
])
async def test_hold_reasons_print_in_the_reports_language(tmp_path: Path, lang: str,
                                                         words: list[str]) -> None:
    pdf = tmp_path / f"elution-{lang}.pdf"
    pdf.write_bytes(records_report([HELD], "elution", site="site-a",
                                   zone=ZoneInfo("Asia/Almaty"), lang=lang))
    text = await asyncio.to_thread(_pdftotext, pdf)
    for word in words:
        assert word in text, (word, text)
    assert "mo99_over_limit" not in text
    assert "canister_factor_validation_overdue" not in text


def test_a_calibrators_hold_reasons_print_as_sentences() -> None:
    # The QA desk keeps a calibrator's hold reasons as [catalog id, params] pairs.
    doc = _Doc("t", "", lang="ru")
    reasons = [["{tests} not passed", {"tests": "constancy"}]]
    assert value_text(doc, reasons, None) == "constancy: не пройдены"
