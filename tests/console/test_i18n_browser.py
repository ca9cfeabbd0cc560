"""The console in Russian and Kazakh in headless Chromium: the page, its JavaScript, the
language selector that remembers, a prescription typed with a decimal comma, site time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from consolelogin import sign_in
from helpers import REPO
from playwright.async_api import async_playwright, expect
from test_i18n_console import agent_in
from test_qc_console import CAL, USERS, auth
from test_web import url
from test_web_browser import CHROMIUM, CHROMIUM_ARGS, chromium_available  # noqa: F401 - fixture

from agent.core.messages import msg
from drivers.base import Sample

# Written next to the other test artifacts; docs/screenshots/ holds copies of a run.
SHOTS = REPO / "test-artifacts"
UI_TIMEOUT_MS = 30_000


@pytest.fixture(autouse=True)
def shots_dir():
    SHOTS.mkdir(exist_ok=True)


async def test_console_in_russian_then_kazakh_with_a_decimal_comma(
    tmp_path: Path, mosquitto, chromium_available,  # noqa: F811 - the fixture
):
    console_errors: list[str] = []
    async with agent_in(tmp_path, mosquitto.url) as (agent, session):
        agent.pipeline.process(Sample(
            device="dosecal-1", channel="vial", value=405.0694, unit="MBq", nuclide="F-18",
            t=dt.datetime.now(dt.UTC), raw_text="F-18  405.069 MBq",
        ))
        async with async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
                args=[*CHROMIUM_ARGS, "--lang=ru-RU"], locale="ru-RU",
                viewport={"width": 1024, "height": 900},
            )
            try:
                page = context.pages[0] if context.pages else await context.new_page()
                page.set_default_timeout(UI_TIMEOUT_MS)
                page.on("console", lambda m: console_errors.append(m.text)
                        if m.type == "error" else None)  # fmt: skip
                page.on("pageerror", lambda e: console_errors.append(str(e)))
                # The browser says ru-RU: the login page, then the console, are in Russian.
                await page.goto(agent.web.url)
                await expect(page.locator("#login h2")).to_have_text("Войти")
                await sign_in(page, agent.web.url, "quinn", USERS["quinn"][2])
                assert await page.get_attribute("html", "lang") == "ru"
                await expect(page.locator("nav a[data-tab=audit]")).to_have_text("Журнал аудита")
                await expect(page.locator("#release-bar .release-state").first).to_have_text(
                    "НЕ ДОПУЩЕН")
                await expect(page.locator("#stream-state")).to_have_text("онлайн")
                # Site time with the zone's name (Asia/Almaty), the number with a comma.
                card = page.locator("#dosecal .card").first
                await expect(card).to_contain_text("Asia/Almaty")
                # Rounded to the instrument's resolution: its display reads 405.069 MBq.
                await expect(card.locator(".measured")).to_have_text("405,069")
                await page.screenshot(path=str(SHOTS / "console-overview-ru.png"))

                # A prescription typed as a Russian speaker types it: 370,5 MBq.
                await page.click("nav a[data-tab=prescriptions]")
                await page.fill("#rx-id", "ORD-1")
                await page.fill("#rx-nuclide", "F-18")
                await page.fill("#rx-activity", "370,5")
                scheduled = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
                local = scheduled.astimezone(agent.config.qc.zone)
                await page.fill("#rx-scheduled", local.strftime("%Y-%m-%dT%H:%M:%S"))
                await page.click("#rx-save")
                row = page.locator('#rx-table tr[data-rx="ORD-1"]')
                await expect(row).to_contain_text("370,5")
                # Entered in site time, shown in site time with its zone, stored in UTC.
                await expect(row).to_contain_text(local.strftime("%d.%m.%Y %H:%M:%S") +
                                                  " Asia/Almaty")
                async with session.get(url(agent, "/api/prescriptions/ORD-1"),
                                       headers=auth("quinn")) as r:
                    stored = (await r.json())["prescription"]
                assert stored["activity_mbq"] == 370.5  # never 3705
                at = dt.datetime.fromisoformat(stored["scheduled"])
                assert abs((at - scheduled).total_seconds()) < 1
                await page.screenshot(path=str(SHOTS / "console-prescriptions-ru.png"))

                await switch_to_kazakh(page)
            finally:
                await context.close()
    assert not console_errors, console_errors


async def switch_to_kazakh(page) -> None:
    """The header's selector: Kazakh, remembered across a reload."""
    await page.select_option("#lang-select", "kk")
    await page.wait_for_function("document.documentElement.lang === 'kk'")
    await expect(page.locator("nav a[data-tab=prescriptions]")).to_have_text(
        "Тағайындаулар")
    await page.reload()
    assert await page.get_attribute("html", "lang") == "kk"
    await expect(page.locator("#release-bar .release-state").first).to_have_text(
        "РҰҚСАТ ЖОҚ")
    await page.click("nav a[data-tab=prescriptions]")
    await expect(page.locator('#rx-table tr[data-rx="ORD-1"] button.rx-arm')
                 ).to_have_text("Қазір өлшеу")  # fmt: skip
    await page.screenshot(path=str(SHOTS / "console-prescriptions-kk.png"))
    await page.click("nav a[data-tab=qc]")
    await expect(page.locator("#qc-start button[data-test=background]")).to_have_text(
        "Фон (күнделікті)")
    await page.screenshot(path=str(SHOTS / "console-qc-kk.png"))


async def test_bulk_acknowledgement_in_russian(tmp_path: Path, mosquitto, chromium_available):  # noqa: F811
    async with agent_in(tmp_path, mosquitto.url) as (agent, session):
        # Alert texts are codes with parameters, shown in the reader's language.
        ids = [agent.alerts.raise_alert(f"area-high-{n}", f"area-{n}", "dose_rate", "alarm",
                                        msg("alert.threshold.above", channel="dose_rate",
                                            value=80.5 + n, unit="uSv/h", limit=25.0),
                                        value=80.5 + n).id for n in range(3)]
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                               args=CHROMIUM_ARGS)
            try:
                context = await browser.new_context(
                    locale="ru-RU", viewport={"width": 1024, "height": 800})
                page = await context.new_page()
                page.set_default_timeout(UI_TIMEOUT_MS)
                await sign_in(page, agent.web.url + "#alerts", "quinn", USERS["quinn"][2])
                await expect(page.locator(f'tr[data-alert-id="{ids[0]}"] .alert-message')
                             ).to_have_text("dose_rate 80,5 мкЗв/ч выше 25")  # fmt: skip
                for alert_id in ids:
                    await page.locator(f'tr[data-alert-id="{alert_id}"] .alert-select').check()
                button = page.locator("#ack-selected")
                await expect(button).to_have_text("Квитировать выбранные (3)…")
                await button.click()
                await expect(page.locator("#ack-summary")).to_contain_text("Тревог: 3")
                await page.fill("#ack-reason", "Источник убран в свинцовый контейнер")
                await page.fill("#ack-password", USERS["quinn"][2])
                await page.screenshot(path=str(SHOTS / "console-bulk-ack-ru.png"))
                await page.click("#ack-submit")
                await expect(page.locator("#ack-dialog")).to_be_hidden()
                for alert_id in ids:
                    await expect(page.locator(f'tr[data-alert-id="{alert_id}"] .acked')
                                 ).to_contain_text("Quinn QA")  # fmt: skip
            finally:
                await browser.close()
        # One signature, each alert acknowledged and audited on its own.
        async with session.get(url(agent, "/api/audit?action=alert.acknowledged"),
                               headers=auth("quinn")) as r:
            rows = (await r.json())["rows"]
        assert sorted(row["subject"].removeprefix("alert/") for row in rows) == sorted(ids)
        assert all("(one acknowledgement of 3 alerts)" in row["reason"] for row in rows)
        assert all(row["reason"].startswith("Источник убран в свинцовый контейнер") for row in rows)


async def test_qc_test_signed_and_held_calibrator_blocked_in_russian(
        tmp_path: Path, mosquitto, chromium_available):  # noqa: F811
    async with agent_in(tmp_path, mosquitto.url) as (agent, session):
        scheduled = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30)
        async with session.post(url(agent, "/api/prescriptions"), headers=auth("rita"), json={
                "id": "ORD-7", "nuclide": "F-18", "activity": "185,5", "unit": "MBq",
                "scheduled": scheduled.isoformat(), "device": CAL}) as r:
            assert r.status == 201
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                               args=CHROMIUM_ARGS)
            try:
                context = await browser.new_context(
                    locale="ru-RU", viewport={"width": 1024, "height": 900})
                page = await context.new_page()
                page.set_default_timeout(UI_TIMEOUT_MS)
                # On hold at the start of the day: "Measure now" is blocked, the hold named.
                await sign_in(page, agent.web.url + "#prescriptions", "tess", USERS["tess"][2])
                row = page.locator('#rx-table tr[data-rx="ORD-7"]')
                await expect(row).to_contain_text("185,5")
                await expect(row.locator("button.rx-arm")).to_be_disabled()
                await expect(row.locator(".rx-held")).to_have_text(
                    "dosecal-1 НЕ ДОПУЩЕН: измерьте эту дозу на допущенном калибраторе")
                await page.screenshot(path=str(SHOTS / "console-held-ru.png"))
                # The background test, guided in Russian, signed with a comment.
                await page.click("nav a[data-tab=qc]")
                await page.click('#qc-start button[data-test="background"]')
                box = page.locator("#qc-run")
                await expect(page.locator("#qc-steps .instruction").first).to_contain_text(
                    "Освободите камеру")
                go = box.locator("tr[data-state=active] button.step-confirm")
                await expect(go).to_have_text("Камера пуста — измерить")
                await expect(box).to_have_attribute("data-state", "running")
                await go.click()
                await expect(box).to_have_attribute("data-state", "completed")
                await page.click("#qc-sign")
                await expect(page.locator("#sign-meaning")).to_have_text("выполнено")
                await page.fill("#sign-comment", "Камера пуста, фон в норме")
                await page.fill("#sign-password", USERS["tess"][2])
                await page.screenshot(path=str(SHOTS / "console-sign-ru.png"))
                await page.click("#sign-submit")
                await expect(box.locator(".run-state")).to_have_text("подписан")
                record = page.locator('#qc-records tr[data-test="background"]').first
                await expect(record).to_contain_text("Камера пуста, фон в норме")
                await expect(record).to_contain_text("соответствует")
                await expect(record).to_contain_text("Asia/Almaty")
            finally:
                await browser.close()


# Every word of a label (header, tabs, column headings, buttons, field labels, pills) on one
# line: a word whose characters lie on two lines was broken mid-word ("Severit y"); and no
# column heading wider than its column.
_BROKEN_WORDS = """() => {
  const broken = [];
  const labels = document.querySelectorAll(
    "header *, nav a, th, button, label, h1, h2, h3, .pill, summary, legend");
  for (const node of labels) {
    if (!node.getClientRects().length) continue;  // hidden
    // A heading wider than its column runs into the next one.
    if (node.tagName === "TH" && node.scrollWidth > node.clientWidth + 1) {
      broken.push(`th overflows its column: ${node.textContent.trim()}`);
    }
    for (const text of node.childNodes) {
      if (text.nodeType !== Node.TEXT_NODE) continue;
      const words = /\\S+/g;
      let m;
      while ((m = words.exec(text.textContent))) {
        const range = document.createRange();
        range.setStart(text, m.index);
        range.setEnd(text, m.index + m[0].length);
        const lines = new Set([...range.getClientRects()].filter((r) => r.width > 0)
          .map((r) => Math.round(r.top)));
        if (lines.size > 1) broken.push(`${node.tagName.toLowerCase()}#${node.id}: ${m[0]}`);
      }
    }
  }
  return broken;
}"""
# Each tab, and what shows it has loaded.
TABS = {"overview": "#release-bar .release-state",
        "qc": "#qc-start button[data-test=background]",
        "prescriptions": '#rx-table tr[data-rx="ORD-1024"]',
        "alerts": "#alerts-table tbody tr[data-alert-id]",
        "audit": "#audit-table tbody tr[data-action]"}


@pytest.mark.parametrize(("lang", "locale"), [("ru", "ru-RU"), ("kk", "kk-KZ")])
async def test_layout_holds_at_1024_px_with_no_label_broken_mid_word(
        tmp_path: Path, mosquitto, chromium_available, lang, locale):  # noqa: F811
    async with agent_in(tmp_path, mosquitto.url) as (agent, session):
        scheduled = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        async with session.post(url(agent, "/api/prescriptions"), headers=auth("rita"), json={
                "id": "ORD-1024", "nuclide": "F-18", "activity": "370,5", "unit": "MBq",
                "scheduled": scheduled.isoformat(), "device": CAL}) as r:
            assert r.status == 201, await r.json()
        agent.alerts.raise_alert("area-high", "area-1", "dose_rate", "alarm",
                                 msg("alert.threshold.above", channel="dose_rate", value=80.5,
                                     unit="uSv/h", limit=25.0), value=80.5)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                               args=CHROMIUM_ARGS)
            try:
                context = await browser.new_context(
                    locale=locale, viewport={"width": 1024, "height": 800})
                page = await context.new_page()
                page.set_default_timeout(UI_TIMEOUT_MS)
                await sign_in(page, agent.web.url, "quinn", USERS["quinn"][2])
                assert await page.get_attribute("html", "lang") == lang
                broken: dict[str, list[str]] = {}
                for tab, ready in TABS.items():
                    await page.click(f"nav a[data-tab={tab}]")
                    await expect(page.locator(ready).first).to_be_visible()
                    found = await page.evaluate(_BROKEN_WORDS)
                    if found:
                        broken[tab] = found
                    await page.screenshot(path=str(SHOTS / f"layout-1024-{tab}-{lang}.png"),
                                          full_page=True)
                # Nothing wider than the window either (no sideways scrolling of the page).
                assert await page.evaluate(
                    "document.documentElement.scrollWidth <= window.innerWidth")
            finally:
                await browser.close()
    assert broken == {}, broken
