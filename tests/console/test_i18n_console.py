"""The console in the user's language: page, catalog for the JavaScript, API errors, input."""

from __future__ import annotations

import asyncio
import contextlib
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
from helpers import wait_for_condition
from test_qc_console import CAL, DEVICES, QC, RULES, USERS, auth, web_users
from test_web import running_agent, url

from drivers.base import Sample

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from agent.service.runtime import Agent


@contextlib.asynccontextmanager
async def agent_in(tmp_path: Path, broker_url: str, *, site_language: str | None = None,
                   qc_extra: dict[str, Any] | None = None,
                   ) -> AsyncIterator[tuple[Agent, aiohttp.ClientSession]]:
    users = web_users()
    for user in users:
        if user["name"] == "rita":
            user["language"] = "kk"
    web: dict[str, Any] = {"users": users}
    if site_language:
        web["language"] = site_language
    qc = {**QC, "timezone": "Asia/Almaty", **(qc_extra or {})}
    async with (
        running_agent(tmp_path, broker_url, devices=DEVICES, rules=RULES, web=web,
                      extra={"qc": qc}) as agent,
        aiohttp.ClientSession() as session,
    ):
        yield agent, session


async def page(session, agent, who: str, **headers: str) -> tuple[str, str]:
    async with session.get(url(agent, "/"), headers={**auth(who), **headers}) as r:
        text = await r.text()
        assert r.status == 200
        return re.search(r'<html lang="(\w+)"', text).group(1), text


async def test_page_language_follows_selector_user_site_and_browser(tmp_path, mosquitto):
    async with agent_in(tmp_path, mosquitto.url) as (agent, session):
        # The browser's Accept-Language, when nothing else is set.
        lang, text = await page(session, agent, "tess", **{"Accept-Language": "ru-RU,ru;q=0.9"})
        assert lang == "ru"
        assert "Журнал аудита" in text and "Audit trail" not in text
        assert '<option value="ru" selected' in text
        lang, text = await page(session, agent, "tess", **{"Accept-Language": "de-DE"})
        assert lang == "en" and "Audit trail" in text
        # Signed in (a session from the login page), the user's own language beats the browser's.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as rita:
            async with rita.post(url(agent, "/api/login"),
                                 json={"name": "rita", "password": USERS["rita"][2]}) as r:
                assert r.status == 200, await r.text()
            lang, text = await page(rita, agent, "rita", **{"Accept-Language": "ru-RU"})
            assert lang == "kk"
            assert "Аудит журналы" in text and "Тағайындаулар" in text
            # The header selector's cookie beats both.
            lang, text = await page(rita, agent, "rita", Cookie="isoedge_lang=ky")
            assert lang == "ky" and "Дайындамалар" in text
            # A cookie naming no language of ours is ignored.
            lang, _ = await page(rita, agent, "rita", Cookie="isoedge_lang=xx")
            assert lang == "kk"


async def test_site_default_and_catalog_for_the_javascript(tmp_path, mosquitto):
    async with agent_in(tmp_path, mosquitto.url, site_language="ky") as (agent, session):
        lang, _ = await page(session, agent, "tess", **{"Accept-Language": "ru"})
        assert lang == "ky"  # the site's web.language before the browser's
        async with session.get(url(agent, "/api/i18n?lang=ru"), headers=auth("tess")) as r:
            catalog = await r.json()
        assert catalog["lang"] == "ru"
        assert catalog["messages"]["Measure now"] == "Измерить сейчас"
        assert catalog["messages"]["Not signed: {reason}"] == "Не подписано: {reason}"
        assert catalog["formats"]["decimal"] == ","
        assert catalog["formats"]["date"] == "dd.MM.yyyy"
        assert catalog["zone"]["name"] == "Asia/Almaty"
        now = datetime.now(UTC).timestamp()
        assert [o for t, o in catalog["zone"]["offsets"] if t <= now][-1] == 5 * 3600


async def test_api_errors_in_the_users_language_with_their_codes(tmp_path, mosquitto):
    async with agent_in(tmp_path, mosquitto.url) as (agent, session):
        scheduled = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        body = {"id": "RX-1", "nuclide": "F-18", "activity": "3,705.5", "unit": "MBq",
                "scheduled": scheduled}
        async with session.post(url(agent, "/api/prescriptions"), json=body,
                                headers={**auth("rita")}) as r:
            answer = await r.json()
        assert r.status == 400
        assert answer["code"] == "not_a_number"
        assert answer["error"] == "activity: сан күтіледі (мысалы, 370,5)"  # rita reads Kazakh
        async with session.post(url(agent, "/api/prescriptions"), json=body,
                                headers={**auth("quinn"), "Accept-Language": "ru"}) as r:
            answer = await r.json()
        assert answer["error"] == "activity: ожидается число (например, 370,5)"
        async with session.post(url(agent, "/api/qc/runs"), json={"device": CAL, "test": "background"},
                                headers={**auth("victor"), "Accept-Language": "ky"}) as r:
            answer = await r.json()
        assert r.status == 403
        assert answer["code"] == "role_not_allowed"
        assert answer["error"].startswith("сиздин ролуңузга (байкоочу) бул уруксат эмес")
        async with session.get(url(agent, "/api/audit?limit=x"),
                               headers={**auth("quinn"), "Accept-Language": "en"}) as r:
            assert (await r.json())["error"] == "limit: expected an integer"


async def test_a_decimal_comma_is_stored_as_a_decimal(tmp_path, mosquitto):
    async with agent_in(tmp_path, mosquitto.url) as (agent, session):
        scheduled = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        body = {"id": "RX-2", "nuclide": "F-18", "activity": "370,5", "unit": "MBq",
                "scheduled": scheduled, "device": CAL}
        async with session.post(url(agent, "/api/prescriptions"), json=body,
                                headers=auth("rita")) as r:
            answer = await r.json()
        assert r.status == 201, answer
        assert answer["prescription"]["activity_mbq"] == 370.5  # never 3705
        assert USERS["rita"][0] == "radiopharmacist"


async def test_an_implausible_activity_needs_a_reason_and_a_held_calibrator_cannot_be_armed(
        tmp_path, mosquitto):
    async with agent_in(tmp_path, mosquitto.url) as (agent, session):
        scheduled = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        body = {"id": "RX-3", "nuclide": "F-18", "activity": "3705", "unit": "MBq",
                "scheduled": scheduled, "device": CAL}
        rx_url = url(agent, "/api/prescriptions")
        async with session.post(rx_url, json=body,
                                headers={**auth("quinn"), "Accept-Language": "en"}) as r:
            answer = await r.json()
        assert r.status == 409
        assert answer["code"] == "implausible_activity"
        assert answer["max_mbq"] == 800
        assert "outside the plausible range for F-18 (20-800 MBq)" in answer["error"]
        confirmed = {**body, "confirm_implausible": True,
                     "confirm_reason": "two patients from one syringe (SOP 12)"}
        async with session.post(rx_url, json=confirmed, headers=auth("rita")) as r:
            assert r.status == 201, await r.json()
        async with session.get(url(agent, "/api/audit?subject=prescription/RX-3"),
                               headers=auth("quinn")) as r:
            rows = (await r.json())["rows"]
        assert any("two patients from one syringe" in (row.get("reason") or "") for row in rows)
        # The calibrator is on hold at the start of the day: "Measure now" is refused.
        async with session.post(url(agent, "/api/prescriptions/RX-3/arm"), json={"device": CAL},
                                headers={**auth("tess"), "Accept-Language": "ru"}) as r:
            answer = await r.json()
        assert r.status == 409
        assert answer["code"] == "calibrator_on_hold"
        assert answer["release"] == "on_hold"
        assert answer["error"].startswith("dosecal-1 НЕ ДОПУЩЕН")
        # The hold's reasons in the reader's language too, not the record's English.
        assert "сегодня ещё не пройден" in answer["error"], answer["error"]
        assert answer["override_allowed"] is False
        # This site allows no override: a signed one is refused before any signature.
        async with session.post(url(agent, "/api/prescriptions/RX-3/arm"), headers=auth("tess"),
                                json={"device": CAL, "override": {
                                    "reason": "no other calibrator", "password": USERS["tess"][2],
                                }}) as r:
            assert r.status == 409
            assert (await r.json())["code"] == "override_not_allowed"


async def test_a_held_calibrator_measures_a_dose_after_a_signed_override_if_the_site_allows_it(
        tmp_path, mosquitto):
    async with agent_in(tmp_path, mosquitto.url, qc_extra={"held_override": True}) as (
            agent, session):
        scheduled = datetime.now(UTC) + timedelta(minutes=20)
        async with session.post(url(agent, "/api/prescriptions"), headers=auth("rita"), json={
                "id": "RX-9", "nuclide": "F-18", "activity": "185", "unit": "MBq",
                "scheduled": scheduled.isoformat(), "device": CAL}) as r:
            assert r.status == 201, await r.json()
        arm = url(agent, "/api/prescriptions/RX-9/arm")
        async with session.post(arm, json={"device": CAL}, headers=auth("tess")) as r:
            answer = await r.json()
        assert r.status == 409 and answer["code"] == "calibrator_on_hold"
        assert answer["override_allowed"] is True
        # A reason and the password at the moment are both required; a wrong one is refused.
        async with session.post(arm, headers=auth("tess"), json={"device": CAL, "override": {
                "reason": "", "password": USERS["tess"][2]}}) as r:
            assert r.status == 400, await r.json()
        async with session.post(arm, headers={**auth("tess"), "Accept-Language": "ru"}, json={
                "device": CAL, "override": {
                    "reason": "only calibrator; constancy re-test after this dose",
                    "password": "wrong-password"}}) as r:
            answer = await r.json()
        assert r.status == 403 and answer["code"] == "signature_refused"
        # The refusal in the reader's words, its code kept ("Not signed: wrong password: not
        # signed" in English was what the page showed before).
        assert answer["refusal"] == "wrong_password" and answer["error"] == "неверный пароль"
        async with session.post(arm, headers=auth("tess"), json={"device": CAL, "override": {
                "reason": "only calibrator; constancy re-test after this dose",
                "password": USERS["tess"][2]}}) as r:
            assert r.status == 200, await r.json()
        async with session.get(url(agent, "/api/audit?action=dosage.held_override"),
                               headers=auth("quinn")) as r:
            (row,) = (await r.json())["rows"]
        assert row["actor"] == "tess" and row["subject"] == "prescription/RX-9"
        assert row["reason"] == "only calibrator; constancy re-test after this dose"
        assert row["signatures"][0]["meaning"] == "performed"
        assert row["new"]["release"] == "on_hold"
        # The dose measured: its dispensing record carries the hold and the override.
        for _ in range(6):
            agent.pipeline.process(Sample(device=CAL, channel="activity", value=190.0,
                                          unit="MBq", nuclide="F-18", t=datetime.now(UTC)))
            await asyncio.sleep(0.1)

        async def dispensed() -> list[dict[str, Any]]:
            async with session.get(url(agent, "/api/dispensing"), headers=auth("quinn")) as r:
                return list((await r.json())["dispensing"])

        await wait_for_condition(lambda: _nonempty(dispensed), timeout=30)
        (record,) = await dispensed()
        assert record["calibrator_release"] == "on_hold"
        assert record["held_override"]["by"] == "tess"
        assert record["held_override"]["reason"].startswith("only calibrator")
        alert = next(a for a in agent.alerts.open_alerts()
                     if a.rule == "qc.held-calibrator-dosage")
        assert alert.message == "qc.held_dosage.override" and alert.severity == "warning"
        assert "override signed by tess: only calibrator" in alert.text("en")
        assert "НЕ ДОПУЩЕН, с разрешением под подписью tess" in alert.text("ru")


async def _nonempty(fetch: Any) -> bool:
    return bool(await fetch())


async def test_the_performer_signs_with_a_comment_printed_on_the_sheet(tmp_path, mosquitto):
    import asyncio

    async with agent_in(tmp_path, mosquitto.url) as (agent, session):
        async with session.post(url(agent, "/api/qc/runs"), headers=auth("tess"),
                                json={"device": CAL, "test": "background"}) as r:
            run_id = (await r.json())["run"]["id"]
        async with session.post(url(agent, f"/api/qc/runs/{run_id}/steps/1/confirm"),
                                headers=auth("tess"), json={}) as r:
            assert r.status == 200  # "chamber empty — measure"
        for _ in range(200):
            async with session.get(url(agent, f"/api/qc/runs/{run_id}"), headers=auth("tess")) as r:
                if (await r.json())["run"]["state"] == "completed":
                    break
            await asyncio.sleep(0.05)
        comment = "Камера протёрта перед измерением"
        async with session.post(url(agent, f"/api/qc/runs/{run_id}/sign"), headers=auth("tess"),
                                json={"password": USERS["tess"][2], "comment": comment}) as r:
            record = (await r.json())["record"]
        assert r.status == 200
        assert record["comment"] == comment
        async with session.get(url(agent, f"/api/qc/report.pdf?kind=daily&device={CAL}"),
                               headers={**auth("tess"), "Accept-Language": "ru"}) as r:
            pdf = await r.read()
    text = pdf_text(pdf, tmp_path)
    assert "Ежедневный лист КК" in text
    assert "Камера протёрта" in text
    assert "Asia/Almaty" in text


def pdf_text(pdf: bytes, tmp_path) -> str:
    import shutil
    import subprocess

    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    assert shutil.which("pdftotext")
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True,
                          text=True, check=True).stdout


async def test_a_flapping_alarm_is_shelved_until_its_expiry_and_audited(tmp_path, mosquitto):
    async with agent_in(tmp_path, mosquitto.url) as (agent, session):
        alert = agent.alerts.raise_alert("area-high", "area-1", "dose_rate", "alarm",
                                         "dose rate 80 uSv/h above 25 uSv/h", value=80.0)
        async with session.post(url(agent, f"/api/alerts/{alert.id}/shelve"), headers=auth("quinn"),
                                json={"minutes": "0,05", "reason": "detector cable loose",
                                      "password": USERS["quinn"][2]}) as r:
            body = await r.json()
        assert r.status == 200, body
        assert body["alert"]["acknowledged_by"] == "Quinn QA"
        # It flaps: cleared and raised again while shelved -> no new alert.
        agent.alerts.clear_alert("area-high", "area-1", "dose_rate")
        again = agent.alerts.raise_alert("area-high", "area-1", "dose_rate", "alarm", "again")
        assert again.id == ""
        assert not [a for a in agent.alerts.open_alerts() if a.rule == "area-high" and a.active]
        # After the expiry (3 s) it is raised again, and the shelf's end is audited.
        import asyncio
        await asyncio.sleep(3.2)
        back = agent.alerts.raise_alert("area-high", "area-1", "dose_rate", "alarm", "back")
        assert back.id and back.active
        async with session.get(url(agent, "/api/audit"), headers=auth("quinn")) as r:
            events = [row["event"] for row in (await r.json())["rows"]]
        assert "alert.shelved" in events and "alert.unshelved" in events
        # A wrong password shelves nothing.
        async with session.post(url(agent, f"/api/alerts/{back.id}/shelve"), headers=auth("quinn"),
                                json={"minutes": 60, "reason": "x", "password": "wrong"}) as r:
            assert r.status == 403


async def test_a_desk_refusal_reads_in_the_users_language_with_its_codes(tmp_path, mosquitto):
    async with agent_in(tmp_path, mosquitto.url) as (agent, session):
        body = {"device": CAL, "test": "no-such-test"}
        async with session.post(url(agent, "/api/qc/runs"), json=body,
                                headers={**auth("tess"), "Accept-Language": "ru"}) as r:
            answer = await r.json()
        assert r.status == 409, answer
        # The sentence in Russian; the machine code and the message's code and parameters kept.
        assert answer["error"] == f"{CAL}: испытание «no-such-test» не входит в его программу КК"
        assert answer["code"] == "conflict"
        assert answer["message"] == {"code": "error.qc.not_in_programme",
                                     "params": {"device": CAL, "test": "no-such-test"}}
        async with session.get(url(agent, "/api/qc/runs/nope"),
                               headers={**auth("tess"), "Accept-Language": "ky"}) as r:
            answer = await r.json()
        assert r.status == 404 and answer["error"] == "nope сыноосу жок"
        async with session.get(url(agent, "/api/qc/runs/nope"),
                               headers={**auth("tess"), "Accept-Language": "en"}) as r:
            assert (await r.json())["error"] == "no test run nope"
