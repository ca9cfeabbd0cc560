"""A change and its audit record are one transaction, audit first; hostile text and times are
answered 400 and leave nothing half-made (issue 20: "a prescription can change with no audit
record")."""

from __future__ import annotations

import json
from typing import Any

from test_qc_console import CAL, HIS_TOKEN, auth, qc_agent
from test_web import url

SURROGATE = "x\ud800"  # a lone surrogate: JSON can carry it, UTF-8 cannot


async def _json(session, method: str, agent, path: str, who: dict[str, str],
                *args: Any) -> tuple[int, Any]:
    body = args[0] if args else None
    async with session.request(method, url(agent, path), headers=who, json=body) as response:
        return response.status, await response.json()


async def _audit(session, agent, subject: str) -> list[str]:
    status, body = await _json(session, "GET", agent, f"/api/audit?subject={subject}",
                               auth("quinn"))
    assert status == 200, body
    return [row["event"] for row in body["rows"]]


async def _prescription(session, agent, rx_id: str) -> tuple[int, Any]:
    return await _json(session, "GET", agent, f"/api/prescriptions/{rx_id}", auth("rita"))


ORDER = {"id": "ORD-1", "nuclide": "F-18", "activity": 370, "unit": "MBq",
         "scheduled": "2026-12-04T10:00:00Z"}


async def test_a_surrogate_reason_changes_nothing_and_every_change_is_audited(tmp_path, mosquitto):
    async with qc_agent(tmp_path, mosquitto.url) as (agent, session):
        status, body = await _json(session, "POST", agent, "/api/prescriptions",
                                   auth("rita"), ORDER)
        assert status == 201, body
        # PUT 370 -> 3700 MBq with a reason that cannot be audited: refused, unchanged.
        status, body = await _json(session, "PUT", agent, "/api/prescriptions/ORD-1",
                                   auth("rita"), {**ORDER, "activity": 3700, "reason": SURROGATE})
        assert status == 400, body
        assert "UTF-8" in body["error"]
        _, body = await _prescription(session, agent, "ORD-1")
        assert body["prescription"]["activity_mbq"] == 370
        # DELETE likewise.
        status, body = await _json(session, "DELETE", agent, "/api/prescriptions/ORD-1",
                                   auth("rita"), {"reason": SURROGATE})
        assert status == 400, body
        status, _ = await _prescription(session, agent, "ORD-1")
        assert status == 200
        # A proper change and removal are both in the trail.
        status, body = await _json(session, "PUT", agent, "/api/prescriptions/ORD-1",
                                   auth("rita"), {**ORDER, "activity": 400, "reason": "re-order"})
        assert status == 200, body
        status, body = await _json(session, "DELETE", agent, "/api/prescriptions/ORD-1",
                                   auth("rita"), {"reason": "cancelled"})
        assert status == 200, body
        events = await _audit(session, agent, "prescription/ORD-1")
        assert events == ["prescription.added", "prescription.changed", "prescription.removed"]


async def test_a_surrogate_in_any_text_field_is_refused(tmp_path, mosquitto):
    async with qc_agent(tmp_path, mosquitto.url) as (agent, session):
        status, body = await _json(session, "POST", agent, "/api/prescriptions", auth("rita"),
                                   {**ORDER, "note": SURROGATE})
        assert status == 400, body
        status, _ = await _prescription(session, agent, "ORD-1")
        assert status == 404
        assert await _audit(session, agent, "prescription/ORD-1") == []


async def test_a_qc_run_cancel_that_cannot_be_audited_leaves_the_run_running(tmp_path, mosquitto):
    async with qc_agent(tmp_path, mosquitto.url) as (agent, session):
        status, body = await _json(session, "POST", agent, "/api/qc/runs", auth("tess"),
                                   {"device": CAL, "test": "constancy"})
        assert status == 201, body
        run_id = body["run"]["id"]
        status, body = await _json(session, "POST", agent, f"/api/qc/runs/{run_id}/cancel",
                                   auth("tess"), {"reason": SURROGATE})
        assert status == 400, body
        assert agent.qa_desk.run(run_id).state == "running"
        status, body = await _json(session, "POST", agent, f"/api/qc/runs/{run_id}/cancel",
                                   auth("tess"), {"reason": "wrong source"})
        assert status == 200, body
        events = await _audit(session, agent, f"{CAL}/constancy")
        assert events == ["qc.test.started", "qc.test.cancelled"]


async def test_an_out_of_range_time_is_400_and_leaves_no_half_made_prescription(
    tmp_path, mosquitto
):
    async with qc_agent(tmp_path, mosquitto.url) as (agent, session):
        for scheduled in ("0001-01-01T00:00+14:00", "9999-12-31T23:59-14:00", "2026-02-30T00:00Z"):
            status, body = await _json(session, "POST", agent, "/api/prescriptions",
                                       {"Authorization": f"Bearer {HIS_TOKEN}"},
                                       {**ORDER, "scheduled": scheduled})
            assert status == 400, (scheduled, body)
        status, body = await _json(session, "GET", agent, "/api/prescriptions", auth("rita"))
        assert status == 200, body
        assert body["prescriptions"] == []
        status, body = await _json(session, "GET", agent,
                                   "/api/audit?since=0001-01-01T00:00%2B14:00", auth("quinn"))
        assert status == 400, body


async def test_finish_needs_a_json_body_and_nul_parameters_are_400(tmp_path, mosquitto):
    async with qc_agent(tmp_path, mosquitto.url) as (agent, session):
        status, body = await _json(session, "POST", agent, "/api/qc/runs", auth("tess"),
                                   {"device": CAL, "test": "background"})
        assert status == 201, body
        run_id = body["run"]["id"]
        async with session.post(url(agent, f"/api/qc/runs/{run_id}/finish"), data="finish",
                                headers={**auth("tess"), "Content-Type": "text/plain"}) as r:
            assert r.status == 415
        for path in ("/api/audit?actor=%00", "/api/alerts?state=open%00",
                     "/api/qc/records?device=a%00b", "/api/prescriptions/ORD%00-1"):
            async with session.get(url(agent, path), headers=auth("quinn")) as r:
                assert r.status == 400, (path, r.status, await r.text())


async def test_numbers_beyond_float_are_400(tmp_path, mosquitto):
    async with qc_agent(tmp_path, mosquitto.url) as (agent, session):
        async with session.post(url(agent, "/api/prescriptions"), headers={
            **auth("rita"), "Content-Type": "application/json"},
            data=json.dumps({**ORDER, "activity": 10**400})) as response:
            assert response.status == 400
        async with session.post(url(agent, "/api/qc/runs"), headers={
            **auth("tess"), "Content-Type": "application/json"},
            data=json.dumps({"device": CAL, "test": "constancy", "time_scale": 10**400})) as r:
            assert r.status == 400
