"""Waste, shipment and receipt records from instrument readings to the broker and their PDFs.

A running agent (its console over HTTP, real mosquitto, the state database): a waste
container is logged and released on a survey taken from the area monitor's own readings; a
shipment is signed by the sender; a delivery is assayed on the simulated Capintec CRC-15 (real
driver, pseudo-terminal) and its receipt signed, once within the tolerance and once beyond it
(an alert at the receiver). Every record arrives on the `qc` stream as a verified envelope; the
PDFs are read back with pdftotext.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from agent_harness import CAL, RECORDS, USERS, basic, pdf_text, published, records_agent, url
from collector import Collector
from helpers import wait_for_condition

from agent.physics.nuclides import NUCLIDES
from agent.records.kinds import verify
from simulators.dosecal import DoseCalibratorSimulator

# A steady monitor: with noise, a k = 2 survey of pure background is "distinguishable" a few
# per cent of the time (that is the statistics, not a fault), which would make the test flaky.
AREA = {"id": "area-1", "type": "synthetic", "channels": ["dose_rate"], "unit": "uSv/h",
        "base": 0.12, "amplitude": 0.0, "noise": 0.0, "poll_interval_s": 0.05,
        "description": "Waste store area monitor"}


async def call(session: aiohttp.ClientSession, agent: Any, path: str, who: str,
               body: dict[str, Any] | None = None, *, status: int = 200) -> dict[str, Any]:
    method = session.get if body is None else session.post
    kwargs: dict[str, Any] = {"headers": basic(who)}
    if body is not None:
        kwargs["json"] = body
    async with method(url(agent, path), **kwargs) as response:
        payload = await response.json()
        assert response.status == status, payload
        return payload


async def pdf_of(session: aiohttp.ClientSession, agent: Any, query: str) -> bytes:
    async with session.get(url(agent, f"/api/records/report.pdf?{query}"),
                           headers=basic("quinn")) as response:
        assert response.status == 200
        return await response.read()


async def test_waste_container_released_on_the_area_monitor_survey(tmp_path: Path,
                                                                   mosquitto: Any) -> None:
    records = {**RECORDS, "waste": {"monitor": {"device": "area-1", "channel": "dose_rate"},
                                    "readings": 5}}
    collector = Collector(mosquitto.port, topic="isoedge/v1/lab1/edge1/#").start()
    try:
        async with records_agent(tmp_path, mosquitto.url, [AREA], records) as agent, \
                aiohttp.ClientSession() as session:
            sealed = datetime.now(UTC) - timedelta(days=30)  # 50 d before its release date
            logged = (await call(session, agent, "/api/waste/containers", "tess", {
                "container_id": "W-2026-07", "nuclides": "I-131, Lu-177",
                "sealed_at": sealed.isoformat(), "password": USERS["tess"][2],
            }, status=201))["record"]
            # 10 x 8.0207 d (I-131, the longest-lived) after sealing
            assert datetime.fromisoformat(logged["release_date"]) == sealed + timedelta(
                seconds=10 * NUCLIDES["I-131"].half_life_s)
            refused = await call(session, agent, "/api/waste/containers", "tess", {
                "container_id": "W-CO57", "nuclides": ["Co-57"], "sealed_at": sealed.isoformat(),
                "password": USERS["tess"][2]}, status=409)
            assert "120 d" in refused["error"]
            run = (await call(session, agent, "/api/waste/surveys", "tess",
                              {"container_id": "W-2026-07"}, status=201))["run"]
            base = f"/api/waste/surveys/{run['id']}"
            for step in (1, 2):  # background, then the container's surface
                await call(session, agent, f"{base}/steps/{step}/confirm", "tess", {})

                async def step_done(step: int = step) -> bool:
                    state = await call(session, agent, "/api/waste", "tess")
                    current = next(r for r in state["runs"] if r["id"] == run["id"])
                    return current["steps"][step - 1]["state"] == "done"

                await wait_for_condition(step_done, timeout=20)
            state = await call(session, agent, "/api/waste", "tess")
            draft = next(r for r in state["runs"] if r["id"] == run["id"])["draft"]
            assert len(draft["background"]) == 5
            assert len(draft["surface"]) == 5
            assert draft["unit"] == "uSv/h"
            survey = (await call(session, agent, f"{base}/sign", "tess",
                                 {"password": USERS["tess"][2]}, status=201))["record"]
            assert survey["released"] is True
            assert survey["before_release_date"] is True
            pdf = await pdf_of(session, agent, "kind=waste&subject=W-2026-07")

            def on_broker() -> list[dict[str, Any]]:
                return [i for i in published(collector, tmp_path) if i.get("kind") == "waste"]

            await wait_for_condition(lambda: len(on_broker()) == 2, timeout=20)
    finally:
        collector.stop()
    assert [i["id"] for i in on_broker()] == [logged["id"], survey["id"]]
    assert all(verify(i) == [] for i in on_broker())
    # the survey's readings are the monitor's own readings, also published on `readings`
    reading_ids = {i["id"] for i in published(collector, tmp_path, "readings")}
    assert set(survey["surface_readings"]) <= reading_ids
    text = pdf_text(pdf, tmp_path, "waste.pdf")
    assert "W-2026-07" in text
    assert "distinguishable from background" in text


async def test_shipment_and_receipt_with_an_alert_beyond_tolerance(tmp_path: Path,
                                                                   mosquitto: Any) -> None:
    sim = DoseCalibratorSimulator("capintec_crc15", "pty", "F-18", 0.0, seed=5, noise=True)
    address = await sim.start()
    devices = [{"id": CAL, "type": "capintec_crc15", "port": address, "poll_interval_s": 0.1,
                "timeout_s": 0.5}]
    records = {**RECORDS, "shipments": {"tolerance_pct": 5.0}}
    collector = Collector(mosquitto.port, topic="isoedge/v1/lab1/edge1/#").start()
    lam = math.log(2) / NUCLIDES["F-18"].half_life_s
    try:
        async with records_agent(tmp_path, mosquitto.url, devices, records) as agent, \
                aiohttp.ClientSession() as session:
            reference = datetime.now(UTC) - timedelta(minutes=30)
            shipment = (await call(session, agent, "/api/shipments", "quinn", {
                "batch_id": "FDG-20261205-01", "product": "[18F]FDG", "nuclide": "F-18",
                "activity_mbq": 500.0, "reference_time": reference.isoformat(),
                "destination_site": "almaty", "volume_ml": 2.0,
                "password": USERS["quinn"][2]}, status=201))["record"]
            assert shipment["signatures"][0]["meaning"] == "approved"
            await call(session, agent, "/api/shipments", "tess", {
                "batch_id": "B", "product": "P", "nuclide": "F-18", "activity_mbq": 1.0,
                "reference_time": reference.isoformat(), "destination_site": "x",
                "password": USERS["tess"][2]}, status=403)  # a technologist does not approve

            async def receive(shipped: float) -> dict[str, Any]:
                papers = {"shipment_id": "SHP-ASTANA-7", "origin_site": "astana",
                          "batch_id": "FDG-20261205-01", "nuclide": "F-18",
                          "activity_mbq": shipped, "reference_time": reference.isoformat(),
                          "device": CAL}
                run = (await call(session, agent, "/api/receipts", "tess", papers,
                                  status=201))["run"]
                await call(session, agent, f"/api/receipts/{run['id']}/steps/1/confirm",
                           "tess", {})

                async def completed() -> bool:
                    state = await call(session, agent, "/api/shipments", "tess")
                    return next(r for r in state["runs"] if r["id"] == run["id"])["state"] \
                        == "completed"

                await wait_for_condition(completed, timeout=20)
                return (await call(session, agent, f"/api/receipts/{run['id']}/sign", "tess",
                                   {"password": USERS["tess"][2]}, status=201))["record"]

            # the delivery: what 480 MBq at the reference time is now
            sim.load_sample("F-18", 480.0 * math.exp(
                -lam * (datetime.now(UTC) - reference).total_seconds()))
            good = await receive(480.0)
            assert good["within_tolerance"] is True
            assert abs(good["difference_pct"]) < 5.0
            assert agent.alerts.active_alert("records.receipt", CAL, None,
                                             "SHP-ASTANA-7") is None
            bad = await receive(560.0)  # papers say 560 MBq: the delivery is ~14 % short
            assert bad["within_tolerance"] is False
            assert bad["difference_pct"] == pytest.approx(
                (bad["measured_mbq"] - bad["expected_mbq"]) / bad["expected_mbq"] * 100, abs=1e-3)
            expected = 560.0 * math.exp(-lam * (
                datetime.fromisoformat(bad["measured_at"]) - reference).total_seconds())
            assert bad["expected_mbq"] == pytest.approx(expected, rel=1e-6)
            alert = agent.alerts.active_alert("records.receipt", CAL, None, "SHP-ASTANA-7")
            assert alert is not None
            assert alert.severity == "warning"
            shipment_pdf = await pdf_of(session, agent, "kind=shipment")
            receipt_pdf = await pdf_of(session, agent, "kind=receipt")

            def on_broker(kind: str) -> list[dict[str, Any]]:
                return [i for i in published(collector, tmp_path) if i.get("kind") == kind]

            await wait_for_condition(lambda: len(on_broker("receipt")) == 2, timeout=20)
            await wait_for_condition(lambda: len(on_broker("shipment")) == 1, timeout=20)
    finally:
        collector.stop()
        await sim.stop()
    assert on_broker("shipment") == [shipment]
    assert [i["id"] for i in on_broker("receipt")] == [good["id"], bad["id"]]
    for item in on_broker("receipt"):
        assert verify(item) == []
        assert set(item) >= {"kind", "id", "t", "site", "shipment_id", "origin_site", "batch_id",
                             "nuclide", "device", "measured_mbq", "measured_at", "readings",
                             "expected_mbq", "difference_pct", "tolerance_pct",
                             "within_tolerance", "signatures"}
    assert set(shipment) >= {"kind", "id", "t", "site", "shipment_id", "batch_id", "product",
                             "nuclide", "activity_mbq", "reference_time", "volume_ml",
                             "destination_site", "signatures"}
    assert "FDG-20261205-01" in pdf_text(shipment_pdf, tmp_path, "shipment.pdf")
    text = pdf_text(receipt_pdf, tmp_path, "receipt.pdf")
    assert "SHP-ASTANA-7" in text
    assert "within tolerance" in text
