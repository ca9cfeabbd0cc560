"""Bearer tokens carry scopes, least by default: the hospital system's token enters
prescriptions but no longer starts or cancels QC runs or reads the audit trail (issue 20)."""

from __future__ import annotations

from test_qc_console import CAL, HIS_TOKEN, auth, qc_agent
from test_web import url

from agent.service.config import parse_config

HIS = {"Authorization": f"Bearer {HIS_TOKEN}"}


async def _status(session, method: str, target: str, headers: dict[str, str],
                  body: object = None) -> int:
    async with session.request(method, target, headers=headers, json=body) as response:
        return response.status


async def test_the_hospital_token_may_prescribe_and_nothing_else(tmp_path, mosquitto):
    async with qc_agent(tmp_path, mosquitto.url) as (agent, session):
        order = {"id": "ORD-9", "nuclide": "F-18", "activity": 370,
                 "scheduled": "2026-12-04T10:00:00Z"}
        assert await _status(session, "POST", url(agent, "/api/prescriptions"), HIS, order) == 201
        assert await _status(session, "GET", url(agent, "/api/prescriptions/ORD-9"), HIS) == 200
        # QC runs: neither started nor cancelled with the token.
        assert await _status(session, "POST", url(agent, "/api/qc/runs"), HIS,
                             {"device": CAL, "test": "constancy"}) == 403
        assert agent.qa_desk.runs(CAL) == []
        status = await _status(session, "POST", url(agent, "/api/qc/runs"), auth("tess"),
                               {"device": CAL, "test": "constancy"})
        assert status == 201
        run = agent.qa_desk.runs(CAL)[0]
        assert await _status(session, "POST", url(agent, f"/api/qc/runs/{run.id}/cancel"), HIS,
                             {"reason": "by token"}) == 403
        assert run.state == "running"
        # The audit trail, the event stream, the page and metrics: not in its scope.
        for path in ("/api/audit", "/api/audit.csv", "/api/audit/report.pdf", "/api/stream",
                     "/metrics", "/api/state"):
            assert await _status(session, "GET", url(agent, path), HIS) == 403, path


def test_a_token_without_scopes_may_only_scrape_metrics():
    config = parse_config({"agent": {"site": "s", "id": "a"}, "web": {"users": [
        {"name": "p", "role": "viewer", "token_sha256": "ab" * 32}]}})
    assert config.web.users[0].scopes == ["metrics"]
