"""A Tc-99m elution end to end in headless Chromium, from the calibrator to the broker and PDF.

The technologist starts the elution on the Elutions page; the simulated Capintec CRC-15 (on a
pseudo-terminal, read by the real driver) holds the eluate on the Tc-99m setting, then the
eluate in the Mo-99 canister on the Mo-99 setting; each step completes on the calibrator's own
settled readings after the technologist's go-ahead on the page. The Al3+ spot test is typed,
the record is signed with the password, published on the `qc` stream through mosquitto
(verified envelope), and its PDF downloaded from the page holds the breakthrough and the
signature (pdftotext).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from agent_harness import CAL, USERS, pdf_text, published, records_agent, sign_in, url
from collector import Collector
from helpers import wait_for_condition
from playwright.async_api import async_playwright, expect

from agent.records.kinds import verify
from simulators.dosecal import DoseCalibratorSimulator

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
UI_TIMEOUT_MS = 30_000


@pytest.fixture
def chromium() -> str:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is not installed"
    return CHROMIUM


async def elute_in_the_page(page: Any, agent: Any, sim: DoseCalibratorSimulator,
                            tmp_path: Path) -> Path:  # fmt: skip
    """The technologist's elution on the page; the simulator is the calibrator in their hands."""
    await sign_in(page, url(agent, "/"), "tess", USERS["tess"][2])
    await page.goto(url(agent, "/#elutions"))
    await page.fill("#elution-volume", "5")
    await page.click('#generators-table tr[data-generator="TCG-49"] .start-elution')
    run = page.locator("#elution-run")
    await expect(run).to_be_visible()
    # step 1: the eluate on the Tc-99m setting
    sim.load_sample("Tc-99m", 1850.0)
    await page.click('#elution-steps tr[data-step="1"] .confirm-step')
    await expect(page.locator('#elution-steps tr[data-step="1"]')).to_have_attribute(
        "data-state", "done")
    # step 2: in the canister on the Mo-99 setting (0.06 MBq x 2.0 = 120 kBq)
    sim.load_sample("Mo-99", 0.06)
    await page.click('#elution-steps tr[data-step="2"] .confirm-step')
    await expect(page.locator("#aluminium-form")).to_be_visible()
    await page.select_option("#aluminium-colour", "lighter")
    await page.click("#aluminium-submit")
    await expect(run).to_have_attribute("data-state", "completed")
    await expect(page.locator("#elution-draft")).to_have_attribute("data-result", "pass")
    await expect(page.locator("#elution-draft")).to_contain_text("kBq/MBq")
    await page.fill("#elution-password", USERS["tess"][2])
    await page.click("#elution-sign-submit")
    row = page.locator("#elutions-table tbody tr[data-record]")
    await expect(row).to_have_count(1)
    await expect(row.locator(".result")).to_contain_text("pass")
    async with page.expect_download() as info:
        await row.locator(".record-pdf").click()
    download = await info.value
    pdf_path = tmp_path / "elution.pdf"
    await download.save_as(pdf_path)
    return pdf_path


@pytest.mark.slow
async def test_tc99m_elution_in_the_browser(tmp_path: Path, mosquitto: Any, chromium: str) -> None:
    sim = DoseCalibratorSimulator("capintec_crc15", "pty", "Tc-99m", 0.0, seed=3, noise=True)
    address = await sim.start()
    collector = Collector(mosquitto.port, topic="isoedge/v1/lab1/edge1/#").start()
    errors: list[str] = []
    devices = [{"id": CAL, "type": "capintec_crc15", "port": address, "poll_interval_s": 0.1,
                "timeout_s": 0.5, "description": "Hot-lab dose calibrator"}]
    try:
        async with records_agent(tmp_path, mosquitto.url, devices) as agent, \
                async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, headless=True,
                                               args=CHROMIUM_ARGS)
            try:
                context = await browser.new_context(accept_downloads=True,
                                                    viewport={"width": 1280, "height": 1000})
                page = await context.new_page()
                page.set_default_timeout(UI_TIMEOUT_MS)
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                pdf_path = await elute_in_the_page(page, agent, sim, tmp_path)
            finally:
                await browser.close()
            records = await agent.records.desk.listing("elution")
            assert len(records) == 1
            record = records[0]

            def on_broker() -> list[dict[str, Any]]:
                return [i for i in published(collector, tmp_path) if i.get("kind") == "elution"]

            await wait_for_condition(lambda: len(on_broker()) == 1, timeout=20)
    finally:
        collector.stop()
        await sim.stop()
    assert errors == []
    item = on_broker()[0]
    assert item == record
    assert verify(item) == []
    assert item["signatures"][0]["name"] == "Tess Technologist"
    assert item["signatures"][0]["meaning"] == "performed"
    assert item["held"] is False
    assert item["volume_ml"] == 5.0
    assert item["tc99m_measured_mbq"] == pytest.approx(1850.0, rel=0.03)
    assert item["mo99_ratio_kbq_per_mbq"] == pytest.approx(
        item["mo99_reading_mbq"] * 1000 * 2.0 / item["tc99m_mbq"], rel=0.01)
    text = pdf_text(pdf_path.read_bytes(), tmp_path, "elution-copy.pdf")
    assert item["eluate_id"] in text
    assert "Mo-99/Tc-99m (kBq/MBq)" in text
    assert "Tess Technologist" in text
    assert item["signatures"][0]["record_sha256"][:16] in text
