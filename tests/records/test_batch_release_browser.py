"""The batch release in the browser: a qualified person releases an [18F]FDG batch.

Real pieces: mosquitto, the agent and its console, the synthesis module simulator (OPC UA
server, its batch events), the dose calibrator simulator read by the CRC-15 driver over a pty,
headless Chromium. The technologist assays the product and signs the batch record (console
API from the signed-in page); nothing can be dispensed from it (409 `batch_not_released`);
the QA officer signs in, releases it from the Batches page with the e-signature dialog, and the
release is a signed record on the `qc` stream.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "console"))

from consolelogin import sign_in
from helpers import wait_for_condition
from playwright.async_api import async_playwright, expect
from test_qa_day_browser import CAL, UI_TIMEOUT_MS, USERS, chromium_available, web_users  # noqa: F401 - fixture
from test_web import running_agent, url
from test_web_browser import CHROMIUM, CHROMIUM_ARGS

from agent.records.kinds import verify
from simulators.dosecal import DoseCalibratorSimulator
from simulators.opcua import SynthesisModuleSimulator

SCALE = 60.0
TESTS = {
    "appearance": {"value": "clear, colourless", "result": "pass"}, "ph": {"value": 5.8},
    "rcp": {"value": 97.9}, "residual_solvents": {"value": 80.0}, "endotoxin": {"value": 3.0},
    "filter_integrity": {"result": "pass"}, "sterility": {"result": "pending"},
}  # fmt: skip


async def _post(page, path: str, body: dict) -> dict:
    return await page.evaluate("""async ([path, body]) => {
        const r = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
                                     body: JSON.stringify(body)});
        return {status: r.status, body: await r.json()};
    }""", [path, body])


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_qa_officer_releases_a_batch_in_the_browser(tmp_path, mosquitto, chromium_available):  # noqa: F811, PLR0915
    synthesis = SynthesisModuleSimulator(time_scale=SCALE, seed=3)
    await synthesis.start()
    calibrator = DoseCalibratorSimulator("capintec_crc15", "pty", "F-18", 500.0, seed=5,
                                         time_scale=SCALE)  # fmt: skip
    address = await calibrator.start()
    devices = [
        synthesis.device_config("synthesis-1"),
        {"id": CAL, "type": "capintec_crc15", "port": address, "poll_interval_s": 0.2,
         "timeout_s": 0.5},
    ]  # fmt: skip
    records = {"synthesis": [{"device": "synthesis-1", "product": "fdg", "calibrator": CAL}]}
    tess, quinn = USERS["tess"][2], USERS["quinn"][2]
    try:
        async with (running_agent(tmp_path, mosquitto.url, devices=devices,
                                  web={"users": web_users()}, extra={"records": records}) as agent,
                    async_playwright() as pw):
            # Once the module's events arrive, a new run: the agent sees it from its start.
            await wait_for_condition(lambda: bool(agent.records.batches.runs()), timeout=60,
                                     interval=0.2)
            synthesis.start_new_run()
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                               args=CHROMIUM_ARGS)
            try:
                page = await (await browser.new_context(
                    viewport={"width": 1280, "height": 900}, locale="ru-RU")).new_page()
                page.set_default_timeout(UI_TIMEOUT_MS)
                await sign_in(page, url(agent, "/#batches"), "tess", tess)
                await expect(page.locator("nav a[data-tab=batches]")).to_have_text("Партии")
                row = page.locator("#batches-table tbody tr.run").first
                await expect(row).to_contain_text("идёт синтез", timeout=60_000)
                batch_id = await row.get_attribute("data-batch")
                await expect(row).to_contain_text("конец синтеза", timeout=60_000)
                answer = await _post(page, f"/api/batches/{batch_id}/assay", {"time_scale": SCALE})
                assert answer["status"] == 200, answer
                await expect(page.locator(f'#batches-table tr[data-batch="{batch_id}"]')
                             ).to_contain_text("измерено", timeout=60_000)
                signed = await _post(page, f"/api/batches/{batch_id}/sign",
                                     {"tests": TESTS, "password": tess})
                assert signed["status"] == 200, signed
                assert signed["body"]["record"]["assay"]["identity"] == "pass"
                assert signed["body"]["record"]["start_event"] is True
                batch_row = page.locator(f'#batches-table tr[data-batch="{batch_id}"]')
                await expect(batch_row).to_have_attribute("data-release", "pending")
                await expect(batch_row.locator("button.batch-release")).to_have_count(0)
                refused = await _post(page, "/api/doses", {
                    "batch_id": batch_id, "prescription_id": "RX-1", "patient_id": "H-77",
                    "volume_ml": 1.0, "device": CAL, "password": tess})  # fmt: skip
                assert refused["status"] == 409 and refused["body"]["code"] == "batch_not_released"
                # The refusal in the reader's language, its codes kept.
                assert refused["body"]["error"] == f"партия {batch_id} не выпущена", refused
                assert refused["body"]["message"] == {
                    "code": "error.dose.batch_not_released", "params": {"batch": batch_id}}

                await page.click("#sign-out")
                await sign_in(page, url(agent, "/#batches"), "quinn", quinn)
                batch_row = page.locator(f'#batches-table tr[data-batch="{batch_id}"]')
                await batch_row.locator("button.batch-release").click()
                await expect(page.locator("#sign-dialog")).to_be_visible()
                await expect(page.locator("#sign-meaning")).to_have_text("допущен")
                await page.fill("#sign-comment", "sterility pending: SOP-REL-001")
                await page.fill("#sign-password", "wrong")
                await page.click("#sign-submit")
                await expect(page.locator("#sign-error")).to_be_visible()
                await page.fill("#sign-password", quinn)
                await page.click("#sign-submit")
                await expect(batch_row).to_have_attribute("data-release", "released")
                await expect(batch_row).to_contain_text("не завершено")
                await expect(page.locator("#doses-table tbody")).to_contain_text(
                    "Из партий ещё не отпущено ни одной дозы.")
                # Released now: the batch gate passes (the next check is the prescription).
                held = await _post(page, "/api/doses", {
                    "batch_id": batch_id, "prescription_id": "RX-1", "patient_id": "H-77",
                    "volume_ml": 1.0, "device": CAL, "password": quinn})  # fmt: skip
                assert held["status"] == 409, held
                assert held["body"]["code"] == "unknown_prescription"
                await page.screenshot(path=str(tmp_path / "batches.png"))
            finally:
                await browser.close()
            release = await agent.records.desk.release_of(batch_id)
            assert release is not None and verify(release) == []
            assert release["signatures"][0]["meaning"] == "released"
            assert release["signatures"][0]["user"] == "quinn"
            assert release["comment"] == "sterility pending: SOP-REL-001"
    finally:
        await calibrator.stop()
        await synthesis.stop()
