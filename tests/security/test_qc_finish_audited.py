"""Finishing a linearity run early changes its state: it is audited and alerted like a run
that completed by itself (it used to leave no audit record)."""

from __future__ import annotations

import pytest
from helpers import wait_for_condition
from qc_harness import QCDesk


@pytest.mark.timeout(200)
async def test_finishing_a_linearity_run_is_audited(tmp_path):
    scale = 3600.0
    async with QCDesk(tmp_path, time_scale=scale) as desk:
        manager = desk.manager
        run = manager.start_test("dc1", "linearity", by="tess", time_scale=scale)
        desk.simulator.place_source("Tc-99m", 45_000.0)
        await wait_for_condition(lambda: len(run.series) >= 13, timeout=90, interval=0.2)
        if run.state == "running":
            manager.finish_linearity(run.id)
        assert run.state == "completed"
        await desk.state.outbox.flush(timeout=10)
        rows = await desk.audit.query(action="qc.test.completed", limit=10)
        assert [r["run"] for r in rows] == [run.id]
