"""The console's QC and prescription API over real HTTP (issue 15).

Roles and the signing policy, signatures with the password at the moment of signing (wrong
password and self-approval refused and audited), the signed audit-trail review, PDF reports,
and the prescriptions API a hospital system calls with a bearer token (the curl example of
docs/web-console.md, run as written), persisted across a restart of the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
from helpers import wait_for_condition
from test_web import basic, bearer, running_agent, url

from agent.console.auth import token_sha256
from agent.console.qc_views import constancy_chart
from agent.core.passwords import hash_password

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from agent.service.runtime import Agent

USERS = {
    "tess": ("technologist", "Tess Technologist", "tech-password-1"),
    "rita": ("radiopharmacist", "Rita Radiopharmacist", "pharm-password-1"),
    "quinn": ("qa", "Quinn QA", "qa-password-1"),
    "quentin": ("qa", "Quentin Second QA", "qa-password-2"),
    "victor": ("viewer", "Victor Viewer", "viewer-password-1"),
}
HIS_TOKEN = "his-token-5f0c8a1e9b7d4c3a"  # noqa: S105 - a test credential
CAL = "dosecal-1"
# An empty chamber: the calibrator's activity channel reads ~0 (the background test passes).
DEVICES = [{"id": CAL, "type": "synthetic", "channels": ["activity"], "unit": "MBq",
            "base": 0.002, "amplitude": 0.0, "poll_interval_s": 0.05}]
QC = {
    "timezone": "Europe/Amsterdam",
    "calibrators": [{
        "device": CAL, "settle_readings": 3,
        "sources": [{"id": "CS-1", "nuclide": "Cs-137", "activity": 7.4,
                     "reference_date": "2025-06-01T12:00:00Z", "certificate": "C-1"}],
        "background": {"max_mbq": 0.1},
        "constancy": {"source": "CS-1", "settings": [{"nuclide": "Cs-137"}]},
    }],
}
RULES = [{"name": "dosage", "type": "dosage", "device": CAL}]


def auth(name: str) -> dict[str, str]:
    return basic((name, USERS[name][2]))


def web_users() -> list[dict[str, Any]]:
    users: list[dict[str, Any]] = [
        {"name": n, "role": r, "full_name": f, "password_hash": hash_password(p)}
        for n, (r, f, p) in USERS.items()
    ]
    users.append({"name": "his", "role": "radiopharmacist", "full_name": "Hospital information system",
                  "token_sha256": token_sha256(HIS_TOKEN), "scopes": ["prescriptions"]})
    return users


@contextlib.asynccontextmanager
async def qc_agent(tmp_path: Path, broker_url: str) -> AsyncIterator[tuple[Agent, aiohttp.ClientSession]]:
    async with (
        running_agent(tmp_path, broker_url, devices=DEVICES, rules=RULES,
                      web={"users": web_users()}, extra={"qc": QC}) as agent,
        aiohttp.ClientSession() as session,
    ):
        yield agent, session


async def post(session, agent, path, who: dict[str, str], body: dict[str, Any]) -> tuple[int, Any]:
    async with session.post(url(agent, path), headers=who, json=body) as response:
        return response.status, await response.json()


async def signed_background(agent, session, who: str) -> dict[str, Any]:
    """`who` runs the background test in the console and signs it."""
    status, body = await post(session, agent, "/api/qc/runs", auth(who),
                              {"device": CAL, "test": "background"})
    assert status == 201, body
    run_id = body["run"]["id"]
    assert body["run"]["steps"][0]["confirm"] == "Chamber empty — measure"
    status, body = await post(session, agent, f"/api/qc/runs/{run_id}/steps/2/confirm", auth(who), {})
    assert status == 409, body  # not the step in progress
    status, body = await post(session, agent, f"/api/qc/runs/{run_id}/steps/1/confirm", auth(who), {})
    assert status == 200, body
    assert body["run"]["steps"][0]["confirmed_by"] == who

    async def completed() -> bool:
        async with session.get(url(agent, f"/api/qc/runs/{run_id}"), headers=auth(who)) as r:
            return (await r.json())["run"]["state"] == "completed"

    for _ in range(100):
        if await completed():
            break
        await asyncio.sleep(0.05)
    status, body = await post(session, agent, f"/api/qc/runs/{run_id}/sign", auth(who),
                              {"password": USERS[who][2]})
    assert status == 200, body
    return body["record"]


async def test_roles_signatures_and_second_person_approval(tmp_path, mosquitto):
    async with qc_agent(tmp_path, mosquitto.url) as (agent, session):
        # A viewer starts nothing; the state says what each role may do.
        status, body = await post(session, agent, "/api/qc/runs", auth("victor"),
                                  {"device": CAL, "test": "background"})
        assert status == 403
        async with session.get(url(agent, "/api/state"), headers=auth("tess")) as r:
            me = (await r.json())["me"]
        assert me["full_name"] == "Tess Technologist"
        assert me["may"]["performed"] and not me["may"]["approved"]
        assert not me["may"]["review_audit"]

        # Signing needs the password in the request, even with the session's credentials.
        status, body = await post(session, agent, "/api/qc/runs", auth("quinn"),
                                  {"device": CAL, "test": "background"})
        assert status == 201
        run_id = body["run"]["id"]
        status, body = await post(session, agent, f"/api/qc/runs/{run_id}/steps/1/confirm",
                                  auth("quinn"), {})
        assert status == 200, body
        await wait_for_condition(lambda: agent.qa_desk.run(run_id).state == "completed")
        status, body = await post(session, agent, f"/api/qc/runs/{run_id}/sign", auth("quinn"), {})
        assert status == 400
        assert "password" in body["error"]
        status, body = await post(session, agent, f"/api/qc/runs/{run_id}/sign", auth("quinn"),
                                  {"password": "wrong"})
        assert (status, body["refusal"]) == (403, "wrong_password")
        status, body = await post(session, agent, f"/api/qc/runs/{run_id}/sign", auth("quinn"),
                                  {"password": USERS["quinn"][2], "name": "quentin"})
        assert status == 403  # nobody signs as someone else
        status, body = await post(session, agent, f"/api/qc/runs/{run_id}/sign", auth("quinn"),
                                  {"password": USERS["quinn"][2]})
        assert status == 200, body
        record = body["record"]
        signature = record["signatures"][0]
        assert (signature["name"], signature["meaning"], signature["timezone"]) == (
            "Quinn QA", "performed", "Europe/Amsterdam")

        # The performer may not approve their own record; a second QA officer may.
        path = f"/api/qc/records/{record['id']}/review"
        status, body = await post(session, agent, path, auth("quinn"),
                                  {"password": USERS["quinn"][2], "meaning": "approved"})
        assert (status, body["refusal"]) == (403, "self_approval")
        status, body = await post(session, agent, path, auth("tess"),
                                  {"password": USERS["tess"][2], "meaning": "approved"})
        assert status == 403  # a technologist does not approve
        status, body = await post(session, agent, path, auth("quentin"),
                                  {"password": USERS["quentin"][2], "meaning": "approved",
                                   "comment": "checked"})
        assert status == 201, body
        assert body["record"]["reviews"]["id"] == record["id"]
        async with session.get(url(agent, f"/api/qc/records?device={CAL}"),
                               headers=auth("victor")) as r:
            listed = (await r.json())["records"]
        assert [s["meaning"] for s in listed[0]["reviewed_by"][0]["signatures"]] == ["approved"]

        refused = await agent.audit.query(action="signature.refused")
        assert [(r["actor"], r["refusal"]) for r in refused] == [
            ("quinn", "wrong_password"), ("quinn", "self_approval")]


async def test_signed_audit_review_and_pdf_reports(tmp_path, mosquitto):
    async with qc_agent(tmp_path, mosquitto.url) as (agent, session):
        await signed_background(agent, session, "tess")
        since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        status, _ = await post(session, agent, "/api/audit/review", auth("tess"),
                               {"since": since, "password": USERS["tess"][2]})
        assert status == 403  # review_audit: qa only
        status, body = await post(session, agent, "/api/audit/review", auth("quinn"),
                                  {"since": since, "password": "nope"})
        assert (status, body["refusal"]) == (403, "wrong_password")
        status, body = await post(session, agent, "/api/audit/review", auth("quinn"),
                                  {"since": since, "password": USERS["quinn"][2],
                                   "comment": "weekly review"})
        assert status == 201, body
        assert body["review"]["event"] == "audit.reviewed"
        assert body["review"]["signatures"][0]["meaning"] == "reviewed"

        for path, words in [
            (f"/api/qc/report.pdf?kind=daily&device={CAL}", ["background", "Tess Technologist"]),
            (f"/api/qc/report.pdf?kind=qc&device={CAL}", ["Release state", "background"]),
            (f"/api/audit/report.pdf?since={since}", ["audit.reviewed", "Quinn QA"]),
        ]:
            async with session.get(url(agent, path.replace("+", "%2B")),
                                   headers=auth("victor")) as r:
                assert r.status == 200, await r.text()
                assert r.content_type == "application/pdf"
                assert "attachment" in r.headers["Content-Disposition"]
                pdf = await r.read()
            (tmp_path / "r.pdf").write_bytes(pdf)
            text = subprocess.run(["pdftotext", str(tmp_path / "r.pdf"), "-"], capture_output=True,  # noqa: ASYNC221
                                  text=True, check=True).stdout  # fmt: skip
            for word in words:
                assert word in text, (path, word)
        async with session.get(url(agent, "/api/qc/report.pdf?kind=linearity"),
                               headers=auth("victor")) as r:
            assert r.status == 404  # no linearity record yet


CURL = """curl -sS -X POST http://{host}/api/prescriptions \\
  -H "Authorization: Bearer {token}" \\
  -H "Content-Type: application/json" \\
  -d '{{"id": "ORD-778812", "nuclide": "F-18", "activity": 370, "unit": "MBq",
       "scheduled": "{scheduled}", "device": "dosecal-1", "note": "PET 09:30"}}'"""


async def test_prescriptions_api_with_a_bearer_token_survives_a_restart(tmp_path, mosquitto):
    scheduled = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    async with qc_agent(tmp_path, mosquitto.url) as (agent, session):
        host = url(agent, "").split("//")[1]
        # The documented curl call, as a hospital system would make it.
        done = await asyncio.to_thread(
            subprocess.run,
            ["sh", "-c", CURL.format(host=host, token=HIS_TOKEN,
                                     scheduled=scheduled.isoformat().replace("+00:00", "Z"))],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        created = json.loads(done.stdout)["prescription"]
        assert created["activity_mbq"] == 370.0
        assert created["origin"] == "his"
        status, body = await post(session, agent, "/api/prescriptions", bearer(HIS_TOKEN),
                                  {"id": "ORD-778812", "nuclide": "F-18", "activity": 1,
                                   "scheduled": scheduled.isoformat()})
        assert status == 409  # exists
        status, body = await post(session, agent, "/api/prescriptions", auth("tess"),
                                  {"id": "X", "nuclide": "F-18", "activity": 1,
                                   "scheduled": scheduled.isoformat()})
        assert status == 403  # a technologist does not prescribe
        status, body = await post(session, agent, "/api/prescriptions", bearer(HIS_TOKEN),
                                  {"id": "X", "nuclide": "Xx-1", "activity": 1,
                                   "scheduled": scheduled.isoformat()})
        assert status == 400
        assert "nuclide" in body["error"]
        change = {"nuclide": "F-18", "activity": 10, "unit": "mCi",
                  "scheduled": scheduled.isoformat(), "device": CAL}
        rx_url = url(agent, "/api/prescriptions/ORD-778812")
        async with session.put(rx_url, headers=auth("rita"), json=change) as r:
            assert r.status == 400  # a change needs a reason
        async with session.put(rx_url, headers=auth("rita"),
                               json={**change, "reason": "dose changed by the physician"}) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["prescription"]["activity_mbq"] == 370.0
        audit = await agent.audit.query(subject="prescription/ORD-778812")
        assert [(a["event"], a["actor"], a.get("reason")) for a in audit] == [
            ("prescription.added", "his", None),
            ("prescription.changed", "rita", "dose changed by the physician"),
        ]
        await agent.state.run(lambda _db: None)  # the writes are committed
    # A restart keeps it (same state folder; the test harness makes a fresh signing key).
    shutil.rmtree(tmp_path / "keys")
    async with qc_agent(tmp_path, mosquitto.url) as (agent, session):
        async with session.get(url(agent, "/api/prescriptions/ORD-778812"),
                               headers=bearer(HIS_TOKEN)) as r:
            assert r.status == 200
            rx = (await r.json())["prescription"]
        assert (rx["activity_mbq"], rx["device"], rx["dispensing"]) == (370.0, CAL, [])
        async with session.delete(url(agent, "/api/prescriptions/ORD-778812"),
                                  headers=bearer(HIS_TOKEN), json={}) as r:
            assert r.status == 400  # withdrawing needs a reason
        async with session.delete(url(agent, "/api/prescriptions/ORD-778812"),
                                  headers=bearer(HIS_TOKEN), json={"reason": "cancelled"}) as r:
            assert r.status == 200
        async with session.get(url(agent, "/api/prescriptions"), headers=auth("victor")) as r:
            assert (await r.json())["prescriptions"] == []


def test_constancy_chart_bands_and_two_sd_limits_of_its_own_history():
    def record(i: int, deviation: float) -> dict[str, Any]:
        return {"id": f"r{i}", "record": "test", "test": "constancy", "t": f"2026-12-0{i}T08:00:00Z",
                "tolerance": {"action_pct": 5.0, "fail_pct": 10.0, "basis": "b"},
                "steps": [{"setting": "Cs-137", "deviation_pct": deviation, "result": "pass"}]}

    chart = constancy_chart([record(1, 1.0), record(2, -1.0), record(3, 0.0),
                             {"id": "x", "record": "review", "test": "constancy"}])
    assert (chart["action_pct"], chart["fail_pct"]) == (5.0, 10.0)
    (series,) = chart["series"]
    assert series["setting"] == "Cs-137"
    assert [p["deviation_pct"] for p in series["points"]] == [1.0, -1.0, 0.0]
    assert series["mean"] == 0.0
    assert series["sd"] == 1.0
    assert series["limits_2sd"] == [-2.0, 2.0]
    assert constancy_chart([record(1, 1.0)])["series"][0]["limits_2sd"] is None
