"""An acknowledgement is one transaction: the agent killed at its commit leaves all or none.

Alert state, the audit record and both stream events are written by the state database's one
writer in one transaction. The agent is started with a fault-injection point that SIGKILLs
it just before (or just after) the commit holding the acknowledgement; the database is then
inspected from outside, and the agent restarted on it.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
from pathlib import Path

import aiohttp
import pytest
from agentproc import make_keys, write_config
from helpers import cli_env, free_port, isoedge_cmd, wait_for_condition

from agent.delivery.outbox import stored_envelopes

DEVICE = """
[[devices]]
id = "area-1"
type = "synthetic"
channels = ["dose_rate"]
unit = "uSv/h"
base = 9.0
amplitude = 0.0
poll_interval_s = 0.05

[[rules]]
name = "area-dose"
type = "threshold"
device = "area-1"
channel = "dose_rate"
high = 2.5
hysteresis = 0.3
min_duration_s = 0
severity = "alarm"
"""


def _payload_items(body: bytes) -> list[dict]:
    text = json.loads(body)["payload"]
    return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))["items"]


def acknowledgement_in(db_path: Path, alert_id: str) -> dict[str, bool]:
    """Which parts of the acknowledgement the state database holds."""
    db = sqlite3.connect(db_path)
    try:
        ack_by = db.execute("SELECT ack_by FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        audit = db.execute(
            "SELECT COUNT(*) FROM audit WHERE action = 'alert.acknowledged' AND subject = ?",
            (f"alert/{alert_id}",),
        ).fetchone()[0]
        items = [item for (row,) in db.execute("SELECT items FROM batches")
                 for item in json.loads("[" + row + "]")]  # fmt: skip
        for _seq, _stream, body in stored_envelopes(db):
            items.extend(_payload_items(body))
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
    events = {(i.get("event"), i.get("alert_id") or i.get("subject")) for i in items}
    return {
        "alert_state": ack_by is not None and ack_by[0] == "Dr. Q",
        "audit_record": audit == 1,
        "alerts_event": ("alert.acknowledged", alert_id) in events,
        "audit_event": ("alert.acknowledged", f"alert/{alert_id}") in events,
    }


def alert_committed(db_path: Path, alert_id: str) -> bool:
    """True once the alert's row is committed (read from outside, as a WAL reader)."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT 1 FROM alerts WHERE id = ?", (alert_id,)).fetchone() is not None
    except sqlite3.OperationalError:  # the table is created at start
        return False
    finally:
        db.close()


async def _open_alert_id(session: aiohttp.ClientSession, base: str) -> str | None:
    async with session.get(base + "/api/alerts?state=open") as response:
        alerts = (await response.json())["alerts"]
    return alerts[0]["id"] if alerts else None


@pytest.mark.parametrize(("point", "kept"), [("before-commit", False), ("after-commit", True)])
async def test_agent_killed_at_the_acknowledgement_commit_keeps_all_or_none(
    tmp_path, point, kept
):
    make_keys(tmp_path / "keys")
    port = free_port()
    # No broker listens: everything stays in the outbox, where the test can see it.
    config = write_config(tmp_path / "agent.toml", f"mqtt://127.0.0.1:{free_port()}", DEVICE)
    text = config.read_text().replace(
        "[web]\nenabled = false", f'[web]\nenabled = true\nlisten = "127.0.0.1:{port}"'
    )
    config.write_text(text)
    env = {**cli_env(), "ISOEDGE_FAULT_KILL_AT": f"{point}:alert.acknowledged"}
    log = (tmp_path / "agent.log").open("ab")
    proc = subprocess.Popen(isoedge_cmd("run", "-c", str(config)), stdout=log, stderr=log,  # noqa: ASYNC220 - the agent runs beside the test
                            env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            alert_ids: list[str] = []

            async def alert_raised() -> bool:
                try:
                    found = await _open_alert_id(session, base)
                except aiohttp.ClientError:
                    return False
                if found:
                    alert_ids.append(found)
                return bool(found)

            await wait_for_condition(alert_raised, timeout=30)
            alert_id = alert_ids[-1]
            # The alert itself must be committed first, so that the acknowledgement is the only
            # thing the kill can take away (a raise and an ack in one cycle would go together).
            await wait_for_condition(
                lambda: alert_committed(tmp_path / "state" / "outbox.db", alert_id), timeout=30)
            with pytest.raises((aiohttp.ClientError, TimeoutError)):
                # The agent dies at the commit: the request never gets its answer.
                await session.post(f"{base}/api/alerts/{alert_id}/ack",
                                   json={"name": "Dr. Q", "reason": "checked"})
        assert proc.wait(timeout=15) == -9, "the fault point must have killed the agent"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()

    parts = acknowledgement_in(tmp_path / "state" / "outbox.db", alert_id)
    assert parts == dict.fromkeys(parts, kept), parts

    # The agent starts again on that database, with the alert in the state it was committed.
    env.pop("ISOEDGE_FAULT_KILL_AT")
    restarted = subprocess.Popen(isoedge_cmd("run", "-c", str(config)), stdout=subprocess.DEVNULL,  # noqa: ASYNC220
                                 stderr=subprocess.DEVNULL, env=env)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:

            async def alert_listed() -> bool:
                try:
                    async with session.get(base + "/api/alerts?state=all") as response:
                        alerts = (await response.json())["alerts"]
                except aiohttp.ClientError:
                    return False
                return any(a["id"] == alert_id for a in alerts)

            await wait_for_condition(alert_listed, timeout=30)
            async with session.get(base + "/api/alerts?state=all") as response:
                alert = next(a for a in (await response.json())["alerts"] if a["id"] == alert_id)
        assert (alert["acknowledged_by"] == "Dr. Q") is kept
    finally:
        restarted.terminate()
        assert restarted.wait(15) == 0
