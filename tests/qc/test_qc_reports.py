"""QC reports as inspectors read them: PDFs checked with pdftotext (poppler-utils)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from collector import Collector, decode_all
from helpers import REPO, cli_env, free_port, isoedge_cmd, wait_until
from qc_harness import PASSWORDS, QCDesk

from agent.qc.reports import audit_extract, daily_sheet, linearity_report, monthly_summary

ARTIFACTS = REPO / "test-artifacts"


def pdf_text(pdf: bytes | Path, tmp_path: Path) -> str:
    path = pdf if isinstance(pdf, Path) else tmp_path / "report.pdf"
    if not isinstance(pdf, Path):
        path.write_bytes(pdf)
    assert shutil.which("pdftotext"), "pdftotext missing: apt-get install poppler-utils"
    return subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True
    ).stdout


def keep_page_png(pdf: Path, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    subprocess.run(
        ["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", "-singlefile", str(pdf),
         str(ARTIFACTS / name)], check=True,
    )  # fmt: skip


async def test_daily_sheet_monthly_summary_and_audit_extract_show_results_and_signatures(tmp_path):
    async with QCDesk(tmp_path) as desk:
        manager = desk.manager
        for test in ("background", "constancy"):
            run = manager.start_test("dc1", test, by="tess")
            await desk.operate(run)
            record = await manager.sign_run(run.id, "tess", PASSWORDS["tess"])
        desk.simulator.set_qc_fault("gain_drift")
        run = manager.start_test("dc1", "constancy", by="tess")
        await desk.operate(run)
        failed = await manager.sign_run(run.id, "tess", PASSWORDS["tess"])
        await manager.review(failed["id"], "quinn", PASSWORDS["quinn"], "reviewed", "gain drift seen")
        with pytest.raises(ValueError, match="wrong password"):
            await manager.review(record["id"], "quentin", "nope", "approved")
        now = datetime.now(UTC)
        audit_review = await manager.review_audit(now - timedelta(hours=1), now + timedelta(minutes=1),
                                            "quinn", PASSWORDS["quinn"], "checked")  # fmt: skip
        assert audit_review["signatures"][0]["meaning"] == "reviewed"
        records = await manager.records()
        await desk.state.settle()
        items = await desk.audit.query()
    zone = desk.config.zone
    day = datetime.fromisoformat(failed["t"]).astimezone(zone).date()
    text = pdf_text(daily_sheet(records, "dc1", day, site="lab", zone=zone), tmp_path)
    assert "Daily QC sheet — dc1" in text
    assert "Constancy" in text and "Background" in text
    assert "page 1 of " in text
    assert "ACTION" in text and "PASS" in text
    assert "Tess Tech" in text and "Quinn QA" in text
    assert "performed" in text and "reviewed" in text
    assert "gain drift seen" in text
    assert "CS-001" in text and "CERT-CS-001" in text
    assert "TG-181" in text

    text = pdf_text(monthly_summary(records, "dc1", day.year, day.month, zone=zone), tmp_path)
    assert "Constancy control chart — dc1" in text
    assert "reviewed: Quinn QA" in text

    text = pdf_text(audit_extract(items, chain_ok=True, reviews=[audit_review]), tmp_path)
    assert "signature.refused" in text
    assert "qc.record.signed" in text
    assert "Review of this audit trail" in text and "Quinn QA" in text


@pytest.mark.slow
@pytest.mark.timeout(200)
async def test_linearity_report_has_its_plot_and_names_the_failing_points(tmp_path):
    scale = 3600.0
    async with QCDesk(tmp_path, time_scale=scale) as desk:
        desk.simulator.set_qc_fault("nonlinearity")
        run = desk.manager.start_test("dc1", "linearity", by="tess", time_scale=scale)
        desk.simulator.place_source("Tc-99m", 45_000.0)
        await wait_for_state(lambda: run.state != "running", 90)
        record = await desk.manager.sign_run(run.id, "tess", PASSWORDS["tess"])
    pdf = tmp_path / "linearity.pdf"
    pdf.write_bytes(linearity_report(record, zone=desk.config.zone))
    keep_page_png(pdf, "qc-linearity-report")
    text = pdf_text(pdf, tmp_path)
    assert "Linearity report — dc1" in text
    assert "result FAIL" in text
    assert "Outside tolerance: point 1 (+0.0 h" in text
    assert "Tess Tech" in text
    assert (ARTIFACTS / "qc-linearity-report.png").stat().st_size > 10_000


async def wait_for_state(predicate, timeout):
    from helpers import wait_for_condition

    await wait_for_condition(predicate, timeout=timeout, interval=0.2)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_demo_publishes_a_signed_constancy_record_and_report_qc_works(tmp_path, mosquitto):
    base = "isoedge/v1/demo-site/edge-1"
    collector = Collector(mosquitto.port, topic=f"{base}/#").start()
    state = tmp_path / "demo"
    started = time.monotonic()
    demo = subprocess.Popen(
        isoedge_cmd("demo", "--duration", "120", "--broker", mosquitto.url, "--state-dir",
                    str(state), "--plain", "--web", f"127.0.0.1:{free_port()}"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        env=cli_env(),
    )  # fmt: skip
    try:

        def constancy_on_qc_topic() -> bool:
            return any(m.topic == f"{base}/qc" for m in collector.envelopes())

        wait_until(constancy_on_qc_topic, timeout=60)
        wait_until(lambda: _qc_items(collector, state, "constancy"), timeout=60 - (time.monotonic() - started))
        elapsed = time.monotonic() - started
        items = _qc_items(collector, state, "constancy")
        wait_until(lambda: _released(collector, base), timeout=10)
    finally:
        demo.send_signal(signal.SIGINT)
        output, _ = demo.communicate(timeout=30)
        collector.stop()
    assert demo.returncode == 0, output[-3000:]
    assert elapsed < 60
    record = items[0]
    assert record["result"] == "pass" and record["device"] == "dosecal-1"
    signature = record["signatures"][0]
    assert signature["meaning"] == "performed" and signature["name"] == "Tess Technologist (demo)"
    assert "tech" in output and "tech-demo" in output  # the banner's demo credentials

    out = tmp_path / "qc.pdf"
    report = subprocess.run(
        isoedge_cmd("report", "qc", "-c", str(REPO / "config/demo.toml"), "--state-dir",
                    str(state), "--out", str(out)),
        capture_output=True, text=True, env=cli_env(), check=False,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    keep_page_png(out, "qc-demo-report")
    text = pdf_text(out, tmp_path)
    assert "Dose calibrator QC records" in text
    assert "Constancy" in text and "PASS" in text
    assert "Tess Technologist (demo)" in text and "performed" in text
    assert "CS137-DEMO-01" in text


def _qc_items(collector: Collector, state: Path, test: str) -> list[dict]:
    key = state / "keys" / "signing.pub.jwk"
    if not key.exists():
        return []
    jwk = json.loads(key.read_text())
    qc = [m for m in collector.envelopes() if m.topic.endswith("/qc")]
    return [i for _t, d, _p in decode_all(qc, jwk) for i in d["items"] if i.get("test") == test]


def _released(collector: Collector, base: str) -> bool:
    statuses = [m for m in collector.snapshot() if m.topic == f"{base}/status"]
    if not statuses:
        return False
    document = json.loads(statuses[-1].payload)
    return document.get("calibrators", {}).get("dosecal-1", {}).get("release") == "released"
