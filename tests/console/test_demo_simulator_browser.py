"""The demo's calibrator under the console's hands (issue 23): with the simulator panel that
only `isoedge demo` gives the console, a technologist completes Background and Constancy from
the browser alone — empty the chamber, place the check source, turn the setting, confirm each
step — and signs them. Without the panel (a real site) the console shows none and its API
answers 404.

Real pieces: mosquitto, the agent and its console, the CRC-15 driver reading the simulator
over a pty, headless Chromium. Nothing acts on the simulator but the page.
"""

from __future__ import annotations

import asyncio

import pytest
from consolelogin import sign_in
from helpers import wait_for_condition
from playwright.async_api import async_playwright, expect
from test_qa_day_browser import CAL, PROGRAMME, UI_TIMEOUT_MS, USERS, chromium_available, web_users  # noqa: F401 - fixture
from test_web import running_agent, url
from test_web_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

from agent.tools.sim_panel import DemoSimulatorPanel
from simulators.dosecal import DoseCalibratorSimulator


async def confirm_and_wait(page, label: str, index: int) -> None:
    step = page.locator(f'#qc-steps tr[data-step="{index}"]')
    await expect(step).to_have_attribute("data-state", "active")
    go = step.locator("button.step-confirm")
    await expect(go).to_have_text(label)
    await go.click()
    await expect(step).to_have_attribute("data-state", "done", timeout=30_000)


@pytest.mark.slow
async def test_background_and_constancy_done_from_the_browser_with_the_demo_panel(
        tmp_path, mosquitto, chromium_available):  # noqa: F811 - the fixture
    sim = DoseCalibratorSimulator("capintec_crc15", "pty", "F-18", 400.0, seed=5, noise=True)
    address = await sim.start()
    devices = [{"id": CAL, "type": "capintec_crc15", "port": address, "poll_interval_s": 0.1,
                "timeout_s": 0.5}]
    tess = USERS["tess"]
    try:
        async with (running_agent(tmp_path, mosquitto.url, devices=devices,
                                  web={"users": web_users()}, extra={"qc": PROGRAMME}) as agent,
                    async_playwright() as pw):
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                               args=CHROMIUM_ARGS)
            try:
                page = await (await browser.new_context(
                    viewport={"width": 1280, "height": 1000})).new_page()
                page.set_default_timeout(UI_TIMEOUT_MS)
                await sign_in(page, url(agent, "/#qc"), "tess", tess[2])
                # A real site: no panel, and its API is not there.
                await expect(page.locator("#qc-start button[data-test=background]")).to_be_visible()
                await expect(page.locator("#sim-panel")).to_be_hidden()
                answer = await page.evaluate("""async () => (await fetch("/api/demo/simulator", {
                    method: "POST", headers: {"Content-Type": "application/json"},
                    body: JSON.stringify({device: "dosecal-1", action: "empty"})})).status""")
                assert answer == 404
                assert sim.chamber.a0_mbq > 0  # untouched

                await the_demo_day(page, agent, sim)
            finally:
                await browser.close()
    finally:
        await sim.stop()


async def sign_run(page, password: str) -> None:
    box = page.locator("#qc-run")
    await expect(box).to_have_attribute("data-state", "completed")
    await expect(box.locator(".run-result")).to_contain_text("pass")
    await page.click("#qc-sign")
    await page.fill("#sign-password", password)
    await page.click("#sign-submit")
    await expect(box.locator(".run-state")).to_have_text("signed")


async def the_demo_day(page, agent, sim: DoseCalibratorSimulator) -> None:
    # The demo: the panel is there; the F-18 vial is in the chamber.
    agent.simulator_panel = DemoSimulatorPanel(agent.qa_desk, {CAL: sim})
    await page.reload()
    panel = page.locator("#sim-panel")
    await expect(panel).to_be_visible()
    await expect(panel).to_have_attribute("data-sample", "F-18")

    # Background: the vial is taken out from the panel, then "chamber empty".
    await page.click('#qc-start button[data-test="background"]')
    await panel.locator("button[data-action=empty]").click()
    await expect(panel).to_have_attribute("data-sample", "")
    await confirm_and_wait(page, "Chamber empty — measure", 1)
    box = page.locator("#qc-run")
    await sign_run(page, USERS["tess"][2])

    # Constancy: the check source placed, then each setting turned on the panel.
    await page.click('#qc-start button[data-test="constancy"]')
    await expect(box).to_have_attribute("data-test", "constancy")
    await panel.locator('button[data-action=place][data-source="CS137-01"]').click()
    await expect(panel).to_have_attribute("data-sample", "Cs-137")
    await confirm_and_wait(page, "Source placed — measure", 1)
    await panel.locator("#sim-setting").select_option("F-18")
    await panel.locator("button[data-action=setting]").click()
    await expect(panel).to_have_attribute("data-setting", "F-18")
    await confirm_and_wait(page, "Setting selected — measure", 2)
    await sign_run(page, USERS["tess"][2])
    release = page.locator(f'#release-bar .release[data-device="{CAL}"]')
    await expect(release.locator(".release-state")).to_have_text("released")

    # The vial goes back for the day's dispensing.
    await panel.locator("button[data-action=vial]").click()
    await expect(panel).to_have_attribute("data-sample", "F-18")


class LateStateAnswer:
    """Holds the page's next /api/qc/state answer (a slow network) until `deliver()`, which
    returns once the page has handled it."""

    # Counts the page's handled state answers: the count rises a task after the answer's JSON
    # is read, when the page's own handling of it (synchronous after that await) is done.
    COUNT = """(() => {
      window.stateAnswers = 0;
      const fetchOriginal = window.fetch;
      window.fetch = async (...args) => {
        const response = await fetchOriginal(...args);
        if (String(args[0]).endsWith("/api/qc/state")) {
          const json = response.json.bind(response);
          response.json = async () => {
            const body = await json();
            setTimeout(() => { window.stateAnswers += 1; }, 0);
            return body;
          };
        }
        return response;
      };
    })();"""

    def __init__(self, page) -> None:
        self.page = page
        self.held = asyncio.Event()
        self._release = asyncio.Event()
        self._delivered = asyncio.Event()

    @classmethod
    async def install(cls, page) -> LateStateAnswer:
        late = cls(page)
        await page.evaluate(cls.COUNT)
        await page.route("**/api/qc/state", late._route)
        return late

    async def _route(self, route) -> None:
        if self.held.is_set():  # only the first one is late
            await route.continue_()
            return
        self.held.set()
        response = await route.fetch()
        await self._release.wait()
        await route.fulfill(response=response)
        self._delivered.set()

    async def deliver(self) -> None:
        answered = await self.page.evaluate("window.stateAnswers")
        self._release.set()
        await asyncio.wait_for(self._delivered.wait(), 10)
        await self.page.wait_for_function(f"window.stateAnswers > {answered}")


LINEARITY = {"nuclide": "Tc-99m", "interval_s": 900, "duration_h": 6, "min_activity_mbq": 100}


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_linearity_runs_in_the_demo_on_a_time_scaled_sample(
        tmp_path, mosquitto, chromium_available):  # noqa: F811 - the fixture
    """The panel's linearity sample decays x720: a 6 h decay-method run (a point every 15 min)
    completes in 30 s in the page, started with the same time scale."""
    sim = DoseCalibratorSimulator("capintec_crc15", "pty", "F-18", 400.0, seed=7, noise=True)
    address = await sim.start()
    devices = [{"id": CAL, "type": "capintec_crc15", "port": address, "poll_interval_s": 0.1,
                "timeout_s": 0.5}]
    programme = {**PROGRAMME, "calibrators": [{**PROGRAMME["calibrators"][0],
                                               "linearity": LINEARITY}]}  # fmt: skip
    try:
        async with (running_agent(tmp_path, mosquitto.url, devices=devices,
                                  web={"users": web_users()}, extra={"qc": programme}) as agent,
                    async_playwright() as pw):
            agent.simulator_panel = DemoSimulatorPanel(agent.qa_desk, {CAL: sim})
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                               args=CHROMIUM_ARGS)
            try:
                page = await (await browser.new_context(
                    viewport={"width": 1280, "height": 1000})).new_page()
                page.set_default_timeout(UI_TIMEOUT_MS)
                await sign_in(page, url(agent, "/#qc"), "tess", USERS["tess"][2])
                late = await LateStateAnswer.install(page)
                await page.click('#qc-start button[data-test="linearity"]')
                box = page.locator("#qc-run")
                await expect(box).to_have_attribute("data-test", "linearity")
                await expect(box).to_have_attribute("data-state", "running")
                # A state reload asked before the panel's action (starting the run asks for
                # one) answers only after it: its older chamber (the F-18 vial) must not come
                # back in the page.
                await asyncio.wait_for(late.held.wait(), 10)
                async with page.expect_response("**/api/demo/simulator"):
                    await page.locator("#sim-panel button[data-action=linearity]").click()
                await expect(page.locator("#sim-panel")).to_have_attribute("data-sample", "Tc-99m")
                await late.deliver()
                # at once: a later reload would mend the page, but only whenever one comes
                assert await page.locator("#sim-panel").get_attribute("data-sample") == "Tc-99m"
                await expect(box).to_have_attribute("data-state", "completed", timeout=120_000)
                run = agent.qa_desk.run(await box.get_attribute("data-run"))
                assert run.time_scale == sim.chamber.time_scale == 720.0
                assert run.linearity is not None and run.result == "pass"
                assert len(run.series) >= 20  # a point every 15 simulated minutes over 6 h
            finally:
                await browser.close()
    finally:
        await sim.stop()


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_analyse_now_shows_the_linearity_result_in_the_page(
        tmp_path, mosquitto, chromium_available):  # noqa: F811 - the fixture
    """"Analyse now" answers in the page, never with a browser dialog: too early, the refusal
    under the controls; with enough points, the analysed run, its step done and its summary."""
    sim = DoseCalibratorSimulator("capintec_crc15", "pty", "F-18", 400.0, seed=11, noise=True)
    address = await sim.start()
    devices = [{"id": CAL, "type": "capintec_crc15", "port": address, "poll_interval_s": 0.1,
                "timeout_s": 0.5}]
    programme = {**PROGRAMME, "calibrators": [{**PROGRAMME["calibrators"][0],
                                               "linearity": LINEARITY}]}  # fmt: skip
    dialogs: list[str] = []
    try:
        async with (running_agent(tmp_path, mosquitto.url, devices=devices,
                                  web={"users": web_users()}, extra={"qc": programme}) as agent,
                    async_playwright() as pw):
            agent.simulator_panel = DemoSimulatorPanel(agent.qa_desk, {CAL: sim})
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                               args=CHROMIUM_ARGS)
            try:
                page = await (await browser.new_context(
                    viewport={"width": 1280, "height": 1000})).new_page()
                page.set_default_timeout(UI_TIMEOUT_MS)
                page.on("dialog", lambda d: (dialogs.append(d.message),
                                             asyncio.ensure_future(d.dismiss())))
                await sign_in(page, url(agent, "/#qc"), "tess", USERS["tess"][2])
                await page.click('#qc-start button[data-test="linearity"]')
                box = page.locator("#qc-run")
                await expect(box).to_have_attribute("data-state", "running")
                # Too early: the refusal is shown in the page; the run goes on.
                await page.click("#qc-finish")
                refusal = page.locator("#qc-start-error")
                await expect(refusal).to_be_visible()
                await expect(refusal).to_contain_text("Not analysed")
                await expect(box).to_have_attribute("data-state", "running")
                await page.locator("#sim-panel button[data-action=linearity]").click()
                run_id = await box.get_attribute("data-run")
                run = agent.qa_desk.run(run_id)
                needed = agent.qa_desk.programme(CAL).linearity.min_points
                await wait_for_condition(lambda: len(run.series) >= needed, timeout=90)
                assert run.state == "running"
                await page.click("#qc-finish")
                await expect(box).to_have_attribute("data-state", "completed")
                await expect(page.locator('#qc-steps tr[data-step="1"]')).to_have_attribute(
                    "data-state", "done")
                summary = page.locator("#qc-run .run-summary")
                await expect(summary).to_contain_text(f"linearity {run.result}: ")
                await expect(summary).to_contain_text(f"{len(run.linearity.points)} points")
                await expect(page.locator("#qc-finish")).to_be_hidden()
                await page.screenshot(path=str(ARTIFACTS / "qc-linearity-analysed.png"),
                                      full_page=True)
            finally:
                await browser.close()
    finally:
        await sim.stop()
    assert dialogs == []
