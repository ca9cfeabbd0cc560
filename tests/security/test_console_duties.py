"""Segregation of duties: a performer never reviews or approves their own record; one approval
per record; only test records are reviewed (issue 20)."""

from __future__ import annotations

from test_qc_console import USERS, auth, post, qc_agent, signed_background


def _review(meaning: str, who: str) -> dict[str, str]:
    return {"meaning": meaning, "password": USERS[who][2]}


async def test_performer_reviews_nothing_of_their_own_and_one_approval_per_record(
    tmp_path, mosquitto
):
    async with qc_agent(tmp_path, mosquitto.url) as (agent, session):
        record = await signed_background(agent, session, "quinn")  # quinn (qa) performed it
        path = f"/api/qc/records/{record['id']}/review"
        for meaning in ("reviewed", "approved"):
            status, body = await post(session, agent, path, auth("quinn"), _review(meaning, "quinn"))
            assert (status, body.get("refusal")) == (403, "self_approval"), body
        status, body = await post(session, agent, path, auth("rita"), _review("reviewed", "rita"))
        assert status == 201, body
        review_id = body["record"]["id"]
        status, body = await post(session, agent, path, auth("quentin"),
                                  _review("approved", "quentin"))
        assert status == 201, body
        approval_id = body["record"]["id"]
        # A second approval of the same record, even by the same approver: refused.
        status, body = await post(session, agent, path, auth("quentin"),
                                  _review("approved", "quentin"))
        assert status == 409, body
        assert "approved already" in body["error"]
        # Reviews of reviews are not records anyone reviews.
        for target in (review_id, approval_id):
            status, body = await post(session, agent, f"/api/qc/records/{target}/review",
                                      auth("rita"), _review("reviewed", "rita"))
            assert status == 409, body
        reviews = await agent.qa_desk.reviews_of(record["id"])
        assert sorted(r["meaning"] for r in reviews) == ["approved", "reviewed"]
