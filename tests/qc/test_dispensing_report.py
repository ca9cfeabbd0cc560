"""The dispensing report (`isoedge report dispensing`): each measured dose against its
prescription, with the calibrator's state and who measured it, in each language."""

from __future__ import annotations

from datetime import timedelta

import pytest
from statestore import StateStore
from test_prescriptions_store import SCHEDULED, _engine, _measure
from test_qc_reports_languages import pdf_tool

from agent.tools.cli import main

WORDS = {
    "ru": ["Отчёт об отпуске доз", "назначение", "НЕ ДОПУЩЕН", "Записей об отпуске доз: 2",
           "нормативного"],
    "kk": ["Доза беру есебі", "тағайындау", "РҰҚСАТ ЖОҚ", "Доза беру жазбалары: 2"],
    "ky": ["Доза берүү отчету", "дайындама", "УРУКСАТ ЖОК", "Доза берүү жазуулары: 2"],
    "en": ["Dispensing report", "prescription", "ON HOLD", "2 dispensing records",
           "regulatory"],
}


@pytest.fixture
async def dispensed(tmp_path):
    """Two doses measured through the real dosage rule: one within limits on a held
    calibrator, one 20 % high on a released one."""
    state = await StateStore(tmp_path).open()
    try:
        engine, dosage = await _engine(state)
        release = {"dc1": "on_hold"}
        dosage.prescriptions.on_dispensed = lambda device, record: {
            **record, "calibrator_release": release[device]}
        for rx, factor in (("RX-21", 1.02), ("RX-22", 1.20)):
            dosage.add_prescription(rx, "F-18", 370, "MBq", SCHEDULED, actor="rita", reason="o")
            dosage.arm_prescription("dc1", rx, by="tess")
            _measure(engine, 370 * factor, SCHEDULED - timedelta(minutes=30))
            await state.settle()
            release["dc1"] = "released"
        assert len(await dosage.dispensing()) == 2
    finally:
        await state.close()
    return tmp_path


@pytest.mark.parametrize("lang", sorted(WORDS))
def test_the_dispensing_report_in_each_language(dispensed, tmp_path, lang, capsys):
    out = tmp_path / f"dispensing-{lang}.pdf"
    assert main(["report", "dispensing", "--state-dir", str(dispensed), "--lang", lang,
                 "--out", str(out)]) == 0
    assert "2 records" in capsys.readouterr().out
    text = " ".join(pdf_tool("pdftotext", out).split())
    for word in WORDS[lang]:
        assert word in text, (word, text[:600])
    assert "RX-21" in text and "RX-22" in text and "tess" in text
    assert "+20" in text  # the 20 % high dose's deviation
    fonts = pdf_tool("pdffonts", out)
    assert "DejaVuSans" in fonts  # the embedded font with the Cyrillic letters


def test_filters_by_period(dispensed, tmp_path, capsys):
    out = tmp_path / "none.pdf"
    assert main(["report", "dispensing", "--state-dir", str(dispensed), "--from", "2030-01-01",
                 "--out", str(out)]) == 0
    assert "0 records" in capsys.readouterr().out
    assert "No dispensing record in this period." in pdf_tool("pdftotext", out)
