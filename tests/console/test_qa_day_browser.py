"""The QA officer's day end to end in headless Chromium (issue 15).

A technologist runs the daily background and constancy tests on the simulated dose calibrator
and signs them (a wrong password first: refused and audited); the calibrator is released. The
electrometer's gain drifts +7 %: the next constancy test fails, the calibrator goes on hold and
an alert is raised. The QA officer reviews and signs the failed record and acknowledges the
alert (both signatures with the password). The radiopharmacist enters a prescription; the
dosage measured on the held calibrator is flagged on its dispensing record. The PDF report
downloaded from the page holds the results and both signatures (pdftotext), and its first page
is rendered to PNG (pdftoppm) as a test artefact.

Real pieces: mosquitto, the agent with its console, the Capintec CRC-15 driver reading the
dose-calibrator simulator over a pseudo-terminal, the state database, Debian's Chromium driven
by Playwright. The "technologist's hands" are the simulator's controls (place the source,
turn the setting), driven by what the page says the current step is.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from collector import Collector, decode_all
from consolelogin import sign_in
from helpers import REPO, wait_for_condition
from playwright.async_api import async_playwright, expect
from test_web import running_agent, url
from test_web_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

from agent.core.passwords import hash_password
from simulators.dosecal import DoseCalibratorSimulator

DOCS_IMAGES = REPO / "docs" / "images"
UI_TIMEOUT_MS = 20_000
USERS = {
    "tess": ("technologist", "Tess Technologist", "tech-password-1"),
    "rita": ("radiopharmacist", "Rita Radiopharmacist", "pharm-password-1"),
    "quinn": ("qa", "Quinn QA Officer", "qa-password-1"),
}
HIS_TOKEN = "hospital-system-token-0123456789"  # noqa: S105 - a test credential
CAL = "dosecal-1"

PROGRAMME: dict[str, Any] = {
    "timezone": "Europe/Amsterdam",
    "calibrators": [{
        "device": CAL,
        "settle_readings": 3,
        "stability_pct": 2.0,
        "sources": [
            {"id": "CS137-01", "nuclide": "Cs-137", "activity": 7.4, "unit": "MBq",
             "reference_date": "2025-06-01T12:00:00Z", "certificate": "CERT-CS137-01",
             "uncertainty_pct": 1.5},
        ],
        "background": {"max_mbq": 0.1},
        # Site limits tighter than the cited default (±5 % action / ±10 % fail).
        "constancy": {"source": "CS137-01", "settings": [{"nuclide": "Cs-137"},
                                                        {"nuclide": "F-18", "ratio": 0.74}],
                      "tolerance": {"action_pct": 2.5, "fail_pct": 5.0,
                                    "basis": "site SOP QC-07 (stricter than AAPM TG-181 ±5 %)"}},
    }],
}


def web_users() -> list[dict[str, Any]]:
    users: list[dict[str, Any]] = [
        {"name": name, "role": role, "full_name": full, "password_hash": hash_password(pw)}
        for name, (role, full, pw) in USERS.items()
    ]
    from agent.console.auth import token_sha256

    users.append({"name": "his", "role": "radiopharmacist", "full_name": "Hospital system",
                  "token_sha256": token_sha256(HIS_TOKEN)})
    return users


@pytest.fixture
def chromium_available():
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is not installed (apt-get install chromium)")


def _shots(name: str) -> str:
    ARTIFACTS.mkdir(exist_ok=True)
    return str(ARTIFACTS / name)


class Technologist:
    """The hands at the calibrator: follows the step the page shows as active."""

    def __init__(self, sim: DoseCalibratorSimulator, agent: Any) -> None:
        self.sim = sim
        self.agent = agent
        self.confirmations = 0

    async def follow(self, page) -> None:
        """Act on each active step until the run in the page is no longer running."""
        manager = self.agent.qa_desk
        for _ in range(300):
            # One read of the page: the rows are redrawn as readings arrive.
            seen = await page.evaluate("""() => {
                const box = document.querySelector("#qc-run");
                const row = document.querySelector("#qc-steps tr[data-state=active]");
                return { state: box.dataset.state,
                         text: row ? row.querySelector(".instruction").dataset.instruction : "",
                         setting: row ? row.children[2].textContent.trim() : "" };
            }""")
            if seen["state"] != "running":
                return
            text, setting = seen["text"], seen["setting"]
            if not text:
                await asyncio.sleep(0.1)
                continue
            changed = False
            if text.startswith("Empty the chamber"):
                if self.sim.chamber.a0_mbq > 0:
                    self.sim.empty()
                    changed = True
            elif "check source" in text and self.sim.chamber.a0_mbq < 1.0:
                source = manager.programme(CAL).source("CS137-01")
                activity, _ = manager.expected_activity(CAL, source.id)
                self.sim.place_source(source.nuclide, activity)
                changed = True
            if setting and self.sim.chamber.selected_nuclide != setting:
                self.sim.set_nuclide(setting)
                changed = True
            # The chamber as the step asks: the operator says so ("chamber empty — measure").
            go = page.locator("#qc-steps tr[data-state=active] button.step-confirm")
            if not changed and await go.count() and await go.is_enabled():
                self.confirmations += 1
                await go.click()
            await asyncio.sleep(0.2)
        raise AssertionError("the test did not complete")


async def run_daily_test(page, tech: Technologist, test: str) -> None:
    box = page.locator("#qc-run")
    # The last run (signed, perhaps of the same test) stays on show until the new one replaces
    # it: follow the new run only once the box shows it.
    previous = await box.get_attribute("data-run") if await box.is_visible() else None
    await page.click(f'#qc-start button[data-test="{test}"]')
    await expect(box).to_be_visible()
    await expect(box).to_have_attribute("data-test", test)
    if previous is not None:
        await expect(box).not_to_have_attribute("data-run", previous)
    # The first step waits for the operator: its button, no measurement before it is pressed.
    label = {"background": "Chamber empty — measure", "constancy": "Source placed — measure"}
    await expect(box.locator("tr[data-state=active] button.step-confirm")).to_have_text(label[test])
    if tech.sim.chamber.a0_mbq > 0:  # the guide's order: the chamber is emptied after the start
        await page.wait_for_timeout(1500)  # 15 polls of the calibrator: no reading is taken yet
        await expect(box).to_have_attribute("data-state", "running")
        await expect(box.locator("tr[data-state=active] .measured .value")).to_have_text("—")
    confirmed = tech.confirmations
    await tech.follow(page)
    assert tech.confirmations - confirmed == len(await box.locator("#qc-steps tbody tr").all())
    await expect(box).to_have_attribute("data-state", "completed", timeout=30_000)


async def sign(page, password: str) -> None:
    await page.fill("#sign-password", password)
    await page.click("#sign-submit")


@pytest.mark.slow
async def test_qa_day_in_the_browser(tmp_path, mosquitto, chromium_available):
    sim = DoseCalibratorSimulator("capintec_crc15", "pty", "F-18", 0.001, seed=11, noise=True)
    address = await sim.start()
    collector = Collector(mosquitto.port, topic="isoedge/v1/lab1/edge1/#").start()
    console_errors: list[str] = []
    devices = [{"id": CAL, "type": "capintec_crc15", "port": address, "poll_interval_s": 0.1,
                "timeout_s": 0.5, "description": "Dispensing dose calibrator"}]
    rules = [{"name": "dosage", "type": "dosage", "device": CAL, "settle_readings": 3}]
    try:
        async with running_agent(tmp_path, mosquitto.url, devices=devices, rules=rules,
                                 web={"users": web_users()}, extra={"qc": PROGRAMME}) as agent:
            sim.empty()
            tech = Technologist(sim, agent)
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                   args=CHROMIUM_ARGS)
                try:
                    pages = {}
                    for name, (_role, _full, password) in USERS.items():
                        context = await browser.new_context(
                            viewport={"width": 1280, "height": 1000}, accept_downloads=True,
                        )
                        page = await context.new_page()
                        page.set_default_timeout(UI_TIMEOUT_MS)
                        page.on("console", lambda m: console_errors.append(m.text)
                                if m.type == "error" else None)
                        page.on("pageerror", lambda e: console_errors.append(str(e)))
                        await sign_in(page, url(agent, "/"), name, password)
                        pages[name] = page
                    await the_day(pages, agent, tech, sim, tmp_path)
                finally:
                    await browser.close()
            jwk = json.loads((tmp_path / "keys" / "signing.pub.jwk").read_text())

            def qc_published() -> list[dict[str, Any]]:
                return [item for topic, doc, _p in decode_all(collector.envelopes(), jwk)
                        if topic.endswith("/qc") for item in doc["items"]]

            await wait_for_condition(lambda: len(qc_published()) >= 4, timeout=15)
    finally:
        collector.stop()
        await sim.stop()
    # The refused requests are the wrong password (403) and the test's own attempt to arm a
    # prescription on the held calibrator (409); nothing else failed in the page.
    assert console_errors == [
        "Failed to load resource: the server responded with a status of 403 (Forbidden)",
        "Failed to load resource: the server responded with a status of 409 (Conflict)",
    ]
    published = qc_published()
    assert [(i["test"], i.get("record"), i["result"]) for i in published] == [
        ("background", "test", "pass"), ("constancy", "test", "pass"),
        ("constancy", "test", "fail"), ("constancy", "review", "fail"),
    ]


async def the_day(pages: dict[str, Any], agent: Any, tech: Technologist,
                  sim: DoseCalibratorSimulator, tmp_path: Path) -> None:  # fmt: skip
    await daily_tests(pages["tess"], agent, tech, sim)
    await gain_drift(pages["tess"], tech, sim)
    await qa_review(pages["quinn"], agent)
    await held_dosage(pages["rita"], agent, sim)
    await report_from_the_page(pages["quinn"], tmp_path)


def release_of(page):
    return page.locator(f'#release-bar .release[data-device="{CAL}"]')


async def daily_tests(page, agent, tech: Technologist, sim: DoseCalibratorSimulator) -> None:
    header = release_of(page)
    await page.goto(url(agent, "/#qc"))
    header = page.locator(f'#release-bar .release[data-device="{CAL}"]')
    await expect(header.locator(".release-state")).to_have_text("ON HOLD")
    await expect(header).to_contain_text("not passed yet today")

    # -- background, then constancy; the first signature with a wrong password. Yesterday's
    # vial is still in the chamber when the background test starts: it waits for the operator.
    sim.place_source("F-18", 400.0)
    await run_daily_test(page, tech, "background")
    await page.click("#qc-sign")
    await expect(page.locator("#sign-dialog")).to_be_visible()
    await expect(page.locator("#sign-meaning")).to_have_text("performed")
    await expect(page.locator("#sign-name")).to_contain_text("Tess Technologist")
    await sign(page, "not-my-password")
    await expect(page.locator("#sign-error")).to_contain_text("wrong password")
    refused = await agent.audit.query(action="signature.refused")
    assert [(r["actor"], r["refusal"]) for r in refused] == [("tess", "wrong_password")]
    await page.screenshot(path=_shots("qa-day-wrong-password.png"))
    await sign(page, USERS["tess"][2])
    await expect(page.locator("#sign-dialog")).to_be_hidden()
    await expect(page.locator("#qc-run .run-state")).to_have_text("signed")

    sim.empty()
    await run_daily_test(page, tech, "constancy")
    steps = page.locator("#qc-steps tbody tr")
    await expect(steps).to_have_count(2)
    await expect(steps.nth(0).locator(".step-result")).to_have_text("pass")
    await expect(steps.nth(0).locator(".expected")).to_contain_text("±")  # with its uncertainty
    measured = float(await steps.nth(0).locator(".measured .value").text_content() or "nan")
    run = agent.qa_desk.runs(CAL)[0]
    assert measured == pytest.approx(run.steps[0].measured_mbq, rel=1e-3)  # IsoEdge's own
    await page.screenshot(path=_shots("qa-day-constancy-completed.png"), full_page=True)
    await page.click("#qc-sign")
    await sign(page, USERS["tess"][2])
    await expect(page.locator("#sign-dialog")).to_be_hidden()
    await expect(header.locator(".release-state")).to_have_text("released")
    await expect(page.locator("#qc-release")).to_contain_text("today's daily tests passed")
    await expect(page.locator("#qc-release")).not_to_contain_text("null")
    records = page.locator("#qc-records tbody tr")
    await expect(records).to_have_count(2)
    signature = records.first.locator('.signature[data-meaning="performed"]')
    await expect(signature).to_contain_text("Tess Technologist")
    await expect(signature).to_contain_text("Europe/Amsterdam")
    await page.screenshot(path=_shots("qa-day-released.png"), full_page=True)



async def gain_drift(page, tech: Technologist, sim: DoseCalibratorSimulator) -> None:
    """The gain drifts +7 %: the next constancy test fails, the calibrator is held."""
    header = release_of(page)
    records = page.locator("#qc-records tbody tr")
    sim.set_qc_fault("gain_drift")
    sim.empty()
    await run_daily_test(page, tech, "constancy")
    await expect(page.locator("#qc-run-result .result")).to_have_text("fail")
    await expect(header.locator(".release-state")).to_have_text("ON HOLD")
    await expect(header).to_contain_text("constancy fail")
    await page.screenshot(path=_shots("qa-day-constancy-fail.png"), full_page=True)
    await page.click("#qc-sign")
    await sign(page, USERS["tess"][2])
    await expect(page.locator("#sign-dialog")).to_be_hidden()
    await expect(records).to_have_count(3)
    await expect(page.locator('#qc-constancy-chart .chart[data-setting="Cs-137"] circle.fail'))\
        .to_have_count(1)
    chart = page.locator("#qc-constancy-chart")
    await chart.scroll_into_view_if_needed()
    await chart.screenshot(path=_shots("qa-day-control-chart.png"))



async def qa_review(qa, agent) -> None:
    """QA: the alert, then a review of the failed record (password at signing)."""
    await qa.goto(url(agent, "/#alerts"))
    row = qa.locator("#alerts-table tbody tr", has_text="qc.constancy")
    await expect(row).to_have_count(1)
    await row.locator("button.ack").click()
    await qa.fill("#ack-reason", "Gain drift confirmed; service called; calibrator held")
    await qa.fill("#ack-password", USERS["quinn"][2])
    await qa.click("#ack-submit")
    await expect(qa.locator("#ack-dialog")).to_be_hidden()
    await expect(row.locator(".acked")).to_contain_text("Quinn QA Officer")
    await qa.goto(url(agent, "/#qc"))
    failed = qa.locator('#qc-records tbody tr[data-result="fail"]')
    await expect(failed).to_have_count(1)
    await failed.locator("button.review").click()
    await expect(qa.locator("#sign-meaning-select")).to_be_visible()
    await qa.select_option("#sign-meaning-select", "reviewed")
    await qa.fill("#sign-comment", "Gain drift +7 %: calibrator held, service called")
    await qa.screenshot(path=_shots("qa-day-review-dialog.png"))
    await sign(qa, USERS["quinn"][2])
    await expect(qa.locator("#sign-dialog")).to_be_hidden()
    await expect(failed.locator('.signature[data-meaning="reviewed"]')).to_contain_text(
        "Quinn QA Officer")
    await qa.screenshot(path=_shots("qa-day-reviewed.png"), full_page=True)

    # The audit trail of the day, reviewed and signed (PIC/S PI 041).
    await qa.click('nav a[data-tab="audit"]')
    await qa.click("#audit-review")
    await expect(qa.locator("#sign-meaning")).to_have_text("reviewed")
    await qa.fill("#sign-comment", "Daily review: one refused signature (typo), gain drift")
    await sign(qa, USERS["quinn"][2])
    await expect(qa.locator("#sign-dialog")).to_be_hidden()
    reviewed = qa.locator('#audit-table tr[data-action="audit.reviewed"]')
    await expect(reviewed).to_have_count(1)
    await expect(reviewed).to_contain_text("quinn")
    refused = qa.locator('#audit-table tr[data-action="signature.refused"]')
    await expect(refused).to_have_count(1)
    await expect(refused).to_contain_text("wrong password")
    await qa.screenshot(path=_shots("qa-day-audit-reviewed.png"))



async def held_dosage(rx_page, agent, sim: DoseCalibratorSimulator) -> None:
    """The radiopharmacist enters a prescription; the dose measured now is flagged."""
    await rx_page.goto(url(agent, "/#prescriptions"))
    now_local = await rx_page.evaluate("() => siteInput(Date.now())")  # site time
    await rx_page.fill("#rx-id", "RX-2026-0042")
    await rx_page.fill("#rx-nuclide", "F-18")
    await rx_page.fill("#rx-activity", "370")
    await rx_page.fill("#rx-scheduled", now_local)
    await rx_page.select_option("#rx-device", CAL)
    await rx_page.click("#rx-save")
    rx_row = rx_page.locator('#rx-table tr[data-rx="RX-2026-0042"]')
    await expect(rx_row).to_have_count(1)
    # "Measure now" is blocked while the calibrator is on hold, on the page and in the API.
    await expect(rx_row.locator("button.rx-arm")).to_be_disabled()
    await expect(rx_row.locator(".rx-held")).to_contain_text("ON HOLD")
    refused = await rx_page.evaluate(
        """async (device) => { const r = await fetch('/api/prescriptions/RX-2026-0042/arm', {
             method: 'POST', headers: {'Content-Type': 'application/json'},
             body: JSON.stringify({device})}); return [r.status, await r.json()]; }""", CAL)
    assert refused[0] == 409 and refused[1]["code"] == "calibrator_on_hold", refused
    # A dose measured anyway (no button needed) is flagged wherever it appears.
    sim.set_qc_fault("gain_drift", on=False)
    sim.place_source("F-18", 370.0)
    held = rx_page.locator('#dispensing-table tr[data-rx="RX-2026-0042"]')
    await expect(held).to_have_count(1)
    await expect(held.locator(".dispensing-release")).to_contain_text("ON HOLD")
    await expect(held).to_have_class("held")
    await expect(rx_row.locator(".rx-last")).to_contain_text("ON HOLD")
    await rx_page.screenshot(path=_shots("qa-day-prescriptions.png"), full_page=True)
    alerts = {(a.rule, a.severity) for a in agent.alerts.open_alerts()}
    assert ("qc.held-calibrator-dosage", "critical") in alerts
    dispensing = await agent.dosage.dispensing("RX-2026-0042")
    assert dispensing[0]["calibrator_release"] == "on_hold"
    assert dispensing[0]["who"].startswith("unattended")  # nobody could arm it: it was held
    # The live view flags every activity reading of the held calibrator.
    await rx_page.click('nav a[data-tab="overview"]')
    await expect(rx_page.locator(f'.dosecal[data-device="{CAL}"] .held-flag')).to_contain_text(
        "ON HOLD")



async def report_from_the_page(qa, tmp_path: Path) -> None:
    """The QC report from the page: results and both signatures."""
    await qa.click('nav a[data-tab="qc"]')
    await qa.select_option("#qc-report-kind", "daily")
    async with qa.expect_download() as info:
        await qa.click("#qc-report")
    download = await info.value
    pdf = tmp_path / "daily.pdf"
    await download.save_as(pdf)
    text = (await asyncio.to_thread(
        subprocess.run, ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True,
        check=True,
    )).stdout  # fmt: skip
    assert "FAIL" in text
    assert "PASS" in text
    assert "Tess Technologist" in text
    assert "Quinn QA Officer" in text
    assert "performed" in text
    assert "reviewed" in text
    assert "CS137-01" in text
    prefix = ARTIFACTS / "qa-day-report"
    await asyncio.to_thread(
        subprocess.run, ["pdftoppm", "-png", "-r", "80", "-f", "1", "-l", "1", str(pdf),
                         str(prefix)], check=True,
    )  # fmt: skip
    rendered = sorted(ARTIFACTS.glob("qa-day-report*.png"))
    assert rendered
    assert rendered[0].stat().st_size > 10_000
    shutil.copy(pdf, ARTIFACTS / "qa-day-report.pdf")


LINEARITY_PROGRAMME: dict[str, Any] = {
    "timezone": "Europe/Amsterdam",
    "calibrators": [{
        "device": CAL, "settle_readings": 3, "stability_pct": 2.0,
        "sources": PROGRAMME["calibrators"][0]["sources"],
        "linearity": {"nuclide": "Tc-99m", "interval_s": 1800, "duration_h": 48,
                      "min_points": 12, "min_activity_mbq": 100},
    }],
}
TIME_SCALE = 7200.0  # two hours of decay per second (simulator and run alike)


@pytest.mark.slow
@pytest.mark.timeout(200)
async def test_linearity_plot_names_the_failing_points_in_the_browser(
    tmp_path, mosquitto, chromium_available
):
    """A time-scaled decay-method linearity run with the -8 % non-linearity above 30 GBq: the
    page plots activity vs time on a log axis with the fit and the residuals in %, and names the
    failing points."""
    sim = DoseCalibratorSimulator("capintec_crc15", "pty", "F-18", 0.001, seed=5, noise=True,
                                  time_scale=TIME_SCALE)
    address = await sim.start()
    sim.set_qc_fault("nonlinearity")
    devices = [{"id": CAL, "type": "capintec_crc15", "port": address, "poll_interval_s": 0.1,
                "timeout_s": 0.5}]
    try:
        async with (
            running_agent(tmp_path, mosquitto.url, devices=devices, web={"users": web_users()},
                          extra={"qc": LINEARITY_PROGRAMME}) as agent,
            async_playwright() as pw,
        ):
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                               args=CHROMIUM_ARGS)
            try:
                context = await browser.new_context(viewport={"width": 1280, "height": 1000})
                page = await context.new_page()
                page.set_default_timeout(90_000)
                await sign_in(page, url(agent, "/#qc"), "tess", USERS["tess"][2])
                # No linearity record yet: the page says so instead of a silent non-download.
                await page.select_option("#qc-report-kind", "linearity")
                await page.click("#qc-report")
                await expect(page.locator("#qc-report-error")).to_contain_text(
                    "no linearity record")
                # Started through the API: only a simulated sample decays time-scaled.
                started = await page.evaluate("""async (device) => {
                    const r = await fetch("/api/qc/runs", { method: "POST",
                      headers: { "Content-Type": "application/json" },
                      body: JSON.stringify({ device, test: "linearity", time_scale: %s }) });
                    return r.status; }""" % TIME_SCALE, CAL)  # noqa: UP031
                assert started == 201
                sim.place_source("Tc-99m", 60_000.0)
                await expect(page.locator("#qc-run")).to_have_attribute(
                    "data-state", "completed", timeout=90_000)
                await expect(page.locator("#qc-run-result .result")).to_have_text("fail")
                await page.click("#qc-sign")
                await sign(page, USERS["tess"][2])
                await expect(page.locator("#sign-dialog")).to_be_hidden()
                chart = page.locator("#qc-linearity-chart .chart.linearity")
                await expect(chart).to_have_count(1)
                await expect(chart).to_contain_text("Outside tolerance: point ")
                # The points above 30 GBq, read 8 % low, are marked off the pass band.
                await expect(chart.locator('svg[aria-label="residuals"] circle:not(.pass)')) \
                    .not_to_have_count(0)
                assert await chart.locator('svg[aria-label="linearity"] polyline.fit') \
                    .count() == 1
                await chart.scroll_into_view_if_needed()
                await chart.screenshot(path=_shots("qa-day-linearity.png"))
                # The signed record's linearity report downloads as a PDF.
                async with page.expect_download() as info:
                    await page.click("#qc-report")
                download = await info.value
                assert download.suggested_filename.startswith(f"qc-linearity-{CAL}-")
                pdf = tmp_path / "linearity.pdf"
                await download.save_as(pdf)
                assert pdf.read_bytes().startswith(b"%PDF")
                await expect(page.locator("#qc-report-error")).to_be_hidden()
            finally:
                await browser.close()
    finally:
        await sim.stop()
