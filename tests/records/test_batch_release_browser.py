"""The batch record, its release and a dose in the browser: an [18F]FDG batch from the page.

Real pieces: mosquitto, the agent and its console, the synthesis module simulator (OPC UA
server, its batch events), the dose calibrator simulator read by the CRC-15 driver over a pty,
headless Chromium. The calibrator is released by its daily QC, done in the page. On the Batches
page (Russian) the technologist starts the product assay, types the release tests (decimal
comma) and signs the batch record with the e-signature dialog; a dose from the unreleased batch
is refused in the page (409 `batch_not_released`, no alert()). The QA officer releases the batch
with the e-signature dialog; the technologist then dispenses one dose against the hospital
system's order, by clicking, and the dispensing record is signed on the `qc` stream. Every step
is a click in the page; the only direct calls are the instrument simulators (the hands at the
calibrator) and the hospital system entering the order.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "console"))

from consolelogin import sign_in
from helpers import wait_for_condition
from playwright.async_api import async_playwright, expect
from test_i18n_browser import _BROKEN_WORDS as BROKEN_WORDS
from test_qa_day_browser import (  # noqa: F401 - fixture
    CAL,
    PROGRAMME,
    UI_TIMEOUT_MS,
    USERS,
    Technologist,
    chromium_available,
    run_daily_test,
    web_users,
)
from test_web import running_agent, url
from test_web_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

from agent.records.kinds import verify
from simulators.dosecal import DoseCalibratorSimulator
from simulators.opcua import SynthesisModuleSimulator

SCALE = 60.0
# The release tests as the analyst types them in the Russian page: decimal commas.
TYPED = {"ph": "5,8", "rcp": "97,9", "residual_solvents": "80", "endotoxin": "3"}
PRESCRIBED_MBQ = 250.0


async def _release_calibrator(page: Any, agent: Any, sim: DoseCalibratorSimulator) -> None:
    """The daily background and constancy tests, done and signed in the page (English)."""
    tech = Technologist(sim, agent)
    for test in ("background", "constancy"):
        await run_daily_test(page, tech, test)
        await page.click("#qc-sign")
        await page.fill("#sign-password", USERS["tess"][2])
        await page.click("#sign-submit")
        await expect(page.locator("#sign-dialog")).to_be_hidden()
        await expect(page.locator("#qc-run .run-state")).to_have_text("signed")
    await wait_for_condition(
        lambda: agent.qa_desk.calibrators_status()[CAL].get("release") == "released",
        timeout=30, interval=0.2)  # fmt: skip


async def _layout_holds(page: Any) -> None:
    """No label broken mid-word, no heading wider than its column, no sideways scrolling."""
    assert await page.evaluate(BROKEN_WORDS) == []
    wide = await page.evaluate("""() => [...document.querySelectorAll("main *")]
        .filter((e) => e.getClientRects().length && e.getBoundingClientRect().right > window.innerWidth)
        .map((e) => `${e.tagName.toLowerCase()}#${e.id}.${e.className}: ${e.getBoundingClientRect().right}`)""")
    assert wide == [], wide
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


async def _sign(page: Any, password: str) -> None:
    await expect(page.locator("#sign-dialog")).to_be_visible()
    await page.fill("#sign-password", password)
    await page.click("#sign-submit")


async def _fill_dose(page: Any, batch_id: str, order: str) -> None:
    form = page.locator("#dose-form")
    await form.locator("select[name=batch_id]").select_option(batch_id)
    await form.locator("input[name=prescription_id]").fill(order)
    await form.locator("input[name=patient_id]").fill("H-77")
    await form.locator("input[name=volume_ml]").fill("0,8")
    await expect(form.locator("input[name=device]")).to_have_value(CAL)
    await page.click("#dose-submit")


@pytest.mark.slow
@pytest.mark.timeout(420)
async def test_batch_assayed_released_and_dispensed_in_the_browser(  # noqa: PLR0915
    tmp_path, mosquitto, chromium_available, monkeypatch,  # noqa: F811
):  # fmt: skip
    synthesis = SynthesisModuleSimulator(time_scale=SCALE, seed=3)
    await synthesis.start()
    calibrator = DoseCalibratorSimulator("capintec_crc15", "pty", "F-18", 0.001, seed=5)
    address = await calibrator.start()
    devices = [
        synthesis.device_config("synthesis-1"),
        {"id": CAL, "type": "capintec_crc15", "port": address, "poll_interval_s": 0.2,
         "timeout_s": 0.5},
    ]  # fmt: skip
    records = {"synthesis": [{"device": "synthesis-1", "product": "fdg", "calibrator": CAL}]}
    rules = [{"name": "dosage", "type": "dosage", "device": CAL, "settle_readings": 3}]
    tess, quinn = USERS["tess"][2], USERS["quinn"][2]
    try:
        async with (running_agent(tmp_path, mosquitto.url, devices=devices, rules=rules,
                                  web={"users": web_users()},
                                  extra={"records": records, "qc": PROGRAMME}) as agent,
                    async_playwright() as pw):
            # The simulated product vial decays SCALE times faster: its assay is fitted so (the
            # page asks for the real-time assay; the simulator's clock is the test's business).
            start_assay = agent.records.batches.start_assay
            def scaled_assay(batch_id: str, *, time_scale: float = 1.0) -> Any:
                assert time_scale == 1.0  # the page asks for a real-time assay
                return start_assay(batch_id, time_scale=SCALE)

            monkeypatch.setattr(agent.records.batches, "start_assay", scaled_assay)
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                               args=CHROMIUM_ARGS)
            try:
                # The morning: the calibrator's daily QC, in the page, releases it.
                qc_page = await (await browser.new_context(
                    viewport={"width": 1280, "height": 1000}, locale="en-US")).new_page()
                qc_page.set_default_timeout(UI_TIMEOUT_MS)
                await sign_in(qc_page, url(agent, "/#qc"), "tess", tess)
                await _release_calibrator(qc_page, agent, calibrator)
                await qc_page.context.close()

                # Once the module's events arrive, a new run: the agent sees it from its start.
                await wait_for_condition(lambda: bool(agent.records.batches.runs()), timeout=60,
                                         interval=0.2)  # fmt: skip
                synthesis.start_new_run()
                page = await (await browser.new_context(
                    viewport={"width": 1024, "height": 900}, locale="ru-RU")).new_page()
                page.set_default_timeout(UI_TIMEOUT_MS)
                dialogs: list[str] = []
                page.on("dialog", lambda d: dialogs.append(d.message))
                await sign_in(page, url(agent, "/#batches"), "tess", tess)
                await expect(page.locator("nav a[data-tab=batches]")).to_have_text("Партии")
                row = page.locator("#batches-table tbody tr.run").first
                await expect(row).to_contain_text("идёт синтез", timeout=60_000)
                batch_id = await row.get_attribute("data-batch")
                assert batch_id
                await expect(row).to_contain_text("конец синтеза", timeout=60_000)

                # The product vial goes into the calibrator on the F-18 setting; the assay starts.
                calibrator.chamber.time_scale = SCALE
                calibrator.load_sample("F-18", 500.0)
                run_row = page.locator(f'#batches-table tr.run[data-batch="{batch_id}"]')
                await run_row.locator("button.batch-assay").click()
                await expect(run_row).to_contain_text("измерение продукта", timeout=30_000)
                await expect(run_row.locator("button.batch-tests")).to_be_visible(timeout=90_000)
                await expect(run_row).to_contain_text("измерено")

                # The release tests, typed: decimal commas; appearance and filter by their result.
                await run_row.locator("button.batch-tests").click()
                form = page.locator("#batch-tests-form")
                await expect(form).to_be_visible()
                await expect(form.locator("label[data-test=ph]")).to_contain_text("4,5 … 8,5")
                await form.locator('input[name="appearance.value"]').fill("прозрачный, бесцветный")
                await form.locator('select[name="appearance.result"]').select_option("pass")
                await form.locator('select[name="filter_integrity.result"]').select_option("pass")
                await form.locator('select[name="sterility.result"]').select_option("pending")
                for code, text in TYPED.items():
                    await form.locator(f'input[name="{code}.value"]').fill(text)
                await form.locator('input[name="ph.value"]').fill("5.8.1")  # a slip: refused
                await page.click("#batch-tests-submit")
                await expect(page.locator("#batch-tests-error")).to_contain_text("pH")
                await expect(page.locator("#sign-dialog")).to_be_hidden()
                await _layout_holds(page)  # 1024 px with the release tests' form open
                await form.locator('input[name="ph.value"]').fill(TYPED["ph"])
                await page.click("#batch-tests-submit")
                await expect(page.locator("#sign-meaning")).to_have_text("выполнено")
                await _sign(page, tess)
                await expect(page.locator("#sign-dialog")).to_be_hidden()
                await expect(form).to_be_hidden()
                batch_row = page.locator(f'#batches-table tr[data-batch="{batch_id}"]:not(.run)')
                await expect(batch_row).to_have_attribute("data-release", "pending")
                await expect(batch_row.locator("button.batch-release")).to_have_count(0)
                record = (await agent.records.desk.batches())[0]["record"]
                assert record["batch_id"] == batch_id and record["assay"]["identity"] == "pass"
                assert {t["code"]: t["value"] for t in record["tests"]}["ph"] == 5.8
                assert record["result"] == "pass" and record["pending"] == ["sterility"]

                # The hospital system's order; a dose from the unreleased batch: refused in the page.
                scheduled = datetime.now(UTC) + timedelta(minutes=30)
                agent.dosage.add_prescription("RX-1", "F-18", PRESCRIBED_MBQ, "MBq", scheduled,
                                              actor="his", note="FDG PET")  # fmt: skip
                await _fill_dose(page, batch_id, "RX-1")
                await _sign(page, tess)
                error = page.locator("#dose-error")
                await expect(error).to_be_visible()
                await expect(error).to_have_attribute("data-code", "batch_not_released")
                # The refusal in the reader's language (its code kept above).
                await expect(error).to_contain_text(f"партия {batch_id} не выпущена")
                await expect(page.locator("#sign-dialog")).to_be_hidden()
                await page.click("#sign-out")

                # The QA officer releases it with the e-signature dialog (a wrong password first).
                await sign_in(page, url(agent, "/#batches"), "quinn", quinn)
                await batch_row.locator("button.batch-release").click()
                await expect(page.locator("#sign-dialog")).to_be_visible()
                await expect(page.locator("#sign-meaning")).to_have_text("допущен")
                await page.fill("#sign-comment", "sterility pending: SOP-REL-001")
                await _sign(page, "wrong")
                await expect(page.locator("#sign-error")).to_be_visible()
                await _sign(page, quinn)
                await expect(batch_row).to_have_attribute("data-release", "released")
                await expect(batch_row).to_contain_text("не завершено")
                await expect(page.locator("#doses-table tbody")).to_contain_text(
                    "Из партий ещё не отпущено ни одной дозы.")
                await page.click("#sign-out")

                # The syringe drawn and measured on the released calibrator: one dose, signed.
                calibrator.chamber.time_scale = 1.0
                half_life_s = agent.nuclides.half_life_s("F-18")
                calibrator.load_sample("F-18", PRESCRIBED_MBQ * 2 ** (30 * 60 / half_life_s))
                loaded = datetime.now(UTC) + timedelta(seconds=2)
                await wait_for_condition(
                    lambda: _reading_after(agent, loaded), timeout=60, interval=0.2)  # fmt: skip
                await sign_in(page, url(agent, "/#batches"), "tess", tess)
                await _fill_dose(page, batch_id, "RX-1")
                await expect(page.locator("#sign-meaning")).to_have_text("выполнено")
                await _sign(page, tess)
                await expect(page.locator("#sign-dialog")).to_be_hidden()
                dose_row = page.locator("#doses-table tbody tr[data-dose]")
                await expect(dose_row).to_have_count(1)
                await expect(dose_row).to_contain_text("H-77")
                await expect(page.locator("#dose-error")).to_be_hidden()
                await _layout_holds(page)  # 1024 px: the batch, its release, the dose form
                ARTIFACTS.mkdir(exist_ok=True)  # docs/screenshots/ holds a copy of a run's
                await page.screenshot(path=str(ARTIFACTS / "console-batches-ru.png"),
                                      full_page=True)  # fmt: skip
                assert dialogs == []  # every refusal was shown in the page
            finally:
                await browser.close()
            release = await agent.records.desk.release_of(batch_id)
            assert release is not None and verify(release) == []
            assert release["signatures"][0]["meaning"] == "released"
            assert release["signatures"][0]["user"] == "quinn"
            assert release["comment"] == "sterility pending: SOP-REL-001"
            doses = await agent.records.desk.listing("dispensing")
            assert len(doses) == 1 and verify(doses[0]) == []
            dose = doses[0]
            assert dose["batch_id"] == batch_id and dose["release"] == release["id"]
            assert dose["patient"] == {"hospital_number": "H-77"} and dose["volume_ml"] == 0.8
            assert dose["signatures"][0]["user"] == "tess"
            assert abs(dose["deviation_pct"]) <= 10 and dose["result"] == "pass"
    finally:
        await calibrator.stop()
        await synthesis.stop()


def _reading_after(agent: Any, moment: datetime) -> bool:
    """True once the records' latest reading of the calibrator was taken after `moment`."""
    latest = agent.records.dispensing.latest.get(CAL, {}).get("t", "")
    return str(latest) > moment.isoformat().replace("+00:00", "Z")
