"""Batch assembly, release and dispensing rules on a real state database (no broker)."""

from __future__ import annotations

import asyncio
import math
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from qc_harness import PASSWORDS
from records_harness import ZONE, RecordsBench

from agent.core.reading import rfc3339
from agent.records.batch import BatchDesk, BatchError, Tracker, judge_tests
from agent.records.config import RecordsSection
from agent.records.dispensing import DispensingDesk, DispensingError
from agent.records.kinds import RecordError
from agent.records.label import label_pdf
from agent.records.release import ReleaseDesk, ReleaseError
from agent.records.signer import SignatureError

F18_S = 109.77 * 60
T0 = datetime(2026, 12, 5, 6, 0, tzinfo=UTC)
CONFIG = {
    "synthesis": [{
        "device": "synth", "product": "fdg", "calibrator": "dc",
        "environment": {
            "pressure_pa": [-150.0, -20.0],
            "pressure": {"device": "cell", "channel": "p"},
            "particles": {"device": "cell", "channel": "n05"},
            "dose_rate": {"device": "cell", "channel": "h"},
        },
    }],
}  # fmt: skip
GOOD_TESTS = {
    "appearance": {"value": "clear", "result": "pass"}, "ph": {"value": 5.0},
    "rcp": {"value": 97.0}, "residual_solvents": {"value": 50.0}, "endotoxin": {"value": 1.0},
    "filter_integrity": {"result": "pass"}, "sterility": {"result": "pending"},
}  # fmt: skip


def _t(s: float) -> str:
    return (T0 + timedelta(seconds=s)).isoformat().replace("+00:00", "Z")


def _event(name: str, s: float, batch: str = "FDG-1", **extra) -> dict:
    return {"id": f"e{s}", "device": "synth", "channel": "batch", "t": _t(s), "kind": "event",
            "value": name, "event": name, "batch_id": batch, **extra}  # fmt: skip


def _reading(device: str, channel: str, s: float, value: float, **extra) -> dict:
    return {"id": f"{device}{channel}{s}", "device": device, "channel": channel, "t": _t(s),
            "value": value, "unit": extra.pop("unit", ""), "quality": "good", **extra}  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _run(desk: BatchDesk, clock: Clock, yield_pct: float = 62.0, half_life_s: float = F18_S):
    """A synthesis run as the live feed passes it: events, the hot cell, then the assay."""
    feed = desk.on_item
    feed("reading", _event("RunStarted", 0, step="trap"))
    for s, (p, n, h) in enumerate([(-80, 1200, 0.3), (-5, 1300, 0.4), (-4, 1250, 0.3),
                                   (-85, 4000, 12.0), (-82, 1100, 0.2)]):  # fmt: skip
        feed("reading", _reading("cell", "p", 10 + s, p))
        feed("reading", _reading("cell", "n05", 10 + s, n))
        feed("reading", _reading("cell", "h", 10 + s, h))
    feed("reading", _event("StepChanged", 120, step="elute"))
    feed("reading", _event("EndOfSynthesis", 1080, step="end", eos_activity=40000.0,
                           eos_activity_unit="MBq", eos_time=_t(1080), yield_pct=yield_pct))
    feed("reading", _reading("cell", "p", 1100, 10.0))  # after EOS: not the run's
    clock.now = T0 + timedelta(seconds=1200)
    desk.start_assay("FDG-1")
    for k in range(0, 661, 30):
        value = 800.0 * math.exp(-math.log(2) * k / half_life_s)
        feed("reading", _reading("dc", "activity", 1200 + k, value, unit="MBq", nuclide="F-18"))


def test_tracker_min_max_and_every_excursion() -> None:
    tracker = Tracker("pressure", "Pa", -150.0, -20.0, "site")
    for s, value in enumerate([-80, -10, -5, -70, -160, -170, -60]):
        tracker.feed(T0 + timedelta(seconds=s), value)
    summary = tracker.summary()
    assert (summary["min"], summary["max"], summary["readings"]) == (-170, -5, 7)
    stamp = {s: rfc3339(T0 + timedelta(seconds=s)) for s in range(7)}
    assert [(e["start"], e["end"], e["extreme"]) for e in summary["excursions"]] == [
        (stamp[1], stamp[2], -5), (stamp[4], stamp[5], -170)]
    assert summary["result"] == "fail"


def test_release_tests_are_judged_against_the_specification() -> None:
    product = RecordsSection().product("fdg")
    results = {r["code"]: r for r in judge_tests(product, GOOD_TESTS)}
    assert results["ph"]["result"] == "pass" and results["sterility"]["result"] == "pending"
    bad = {**GOOD_TESTS, "ph": {"value": 4.4}, "rcp": {"value": 94.9}}
    results = {r["code"]: r for r in judge_tests(product, bad)}
    assert results["ph"]["result"] == "fail" and results["rcp"]["result"] == "fail"
    assert {r["code"]: r for r in judge_tests(product, {**GOOD_TESTS, "ph": {"value": 8.5}})}[
        "ph"]["result"] == "pass"
    with pytest.raises(RecordError, match="pending result is not allowed"):
        judge_tests(product, {**GOOD_TESTS, "ph": {"result": "pending"}})
    with pytest.raises(RecordError, match="no result"):
        judge_tests(product, {k: v for k, v in GOOD_TESTS.items() if k != "endotoxin"})
    with pytest.raises(RecordError, match="finite number"):
        judge_tests(product, {**GOOD_TESTS, "rcp": {"value": "high"}})


async def test_batch_assembled_signed_released_and_dispensed(tmp_path: Path) -> None:
    config = RecordsSection.model_validate(CONFIG)
    clock = Clock()
    async with RecordsBench(tmp_path, config) as bench:
        bench.desk.now = clock
        desk = BatchDesk(bench.desk, config, alerts=bench.state.alerts, now=clock)
        # Hostile input is refused and counted, never raised.
        desk.on_item("reading", _event("RunStarted", 0, batch=""))
        desk.on_item("reading", {**_event("RunStarted", 0), "t": "yesterday"})
        desk.on_item("reading", _event("EndOfSynthesis", 5, batch="NEVER-STARTED"))
        assert desk.rejected == 3 and desk.runs() == []
        desk.on_item("reading", _event("StepChanged", -50, batch="FDG-0", step="label"))
        _run(desk, clock, yield_pct=42.0)
        assert desk.run("FDG-0").state == "aborted"  # a new run began before its EOS
        run = desk.run("FDG-1")
        assert run.state == "assayed" and run.assay["identity"] == "pass"
        assert abs(run.assay["half_life_min"] - 109.77) < 0.01
        with pytest.raises(SignatureError):
            await desk.sign("FDG-1", GOOD_TESTS, "tess", "wrong")
        record = await desk.sign("FDG-1", GOOD_TESTS, "tess", PASSWORDS["tess"])
        assert [s["step"] for s in record["steps"]] == ["trap", "elute", "end"]
        assert record["start_event"] is True and record["started"] == rfc3339(T0)
        env = {e["quantity"]: e for e in record["environment"]}
        assert env["pressure"]["readings"] == 5 and env["pressure"]["max"] == -4
        assert [e["extreme"] for e in env["pressure"]["excursions"]] == [-4]
        assert [e["extreme"] for e in env["particles_0_5um"]["excursions"]] == [4000]
        assert [e["extreme"] for e in env["dose_rate"]["excursions"]] == [12.0]
        assert record["result"] == "fail"
        assert "environment:pressure" in record["failed"]
        # Yield outside its investigation limits: a deviation in the record and an alert.
        assert record["deviations"][0]["code"] == "yield_outside_investigation_limits"
        expected = 42.0 * math.exp(-math.log(2) * 1080 / F18_S)
        assert record["yield_pct"] == pytest.approx(expected, rel=1e-9)
        assert any(a.rule == "records.batch.deviation" for a in bench.state.alerts.open_alerts())
        with pytest.raises(BatchError, match="recorded already"):
            await desk.sign("FDG-1", GOOD_TESTS, "tess", PASSWORDS["tess"])
        release = ReleaseDesk(bench.desk)
        with pytest.raises(ReleaseError) as failed:
            await release.decide("FDG-1", "released", name="quinn", password=PASSWORDS["quinn"])
        assert failed.value.code == "failed"
        rejected = await release.decide("FDG-1", "rejected", name="quinn",
                                        password=PASSWORDS["quinn"])  # fmt: skip
        assert rejected["signatures"][0]["meaning"] == "rejected"
        with pytest.raises(ReleaseError) as twice:
            await release.decide("FDG-1", "rejected", name="quentin",
                                 password=PASSWORDS["quentin"])  # fmt: skip
        assert twice.value.code == "decided_already"


async def test_the_assay_is_fitted_from_the_settled_chamber(tmp_path: Path) -> None:
    """A stale empty-chamber reading and the vial going in are not fitted; a mess fails."""
    config = RecordsSection.model_validate(CONFIG)
    clock = Clock()
    async with RecordsBench(tmp_path, config) as bench:
        desk = BatchDesk(bench.desk, config, now=clock)
        feed = desk.on_item
        for batch in ("FDG-1", "FDG-2"):
            feed("reading", _event("RunStarted", 0, batch=batch, step="trap"))
            feed("reading", _event("EndOfSynthesis", 1080, batch=batch, step="end",
                                   eos_activity=40000.0, eos_activity_unit="MBq",
                                   eos_time=_t(1080), yield_pct=62.0))  # fmt: skip
            clock.now = T0 + timedelta(seconds=1200)
            desk.start_assay(batch)
            if batch == "FDG-1":
                # The empty chamber's last reading, then the vial still going in, then decay
                # read every 2 minutes (readings 1.3 % apart: settled once decay corrected).
                ramp = [0.002, 120.0, 610.0]
                for k, value in enumerate(ramp):
                    feed("reading", _reading("dc", "activity", 1200 + k, value, unit="MBq",
                                             nuclide="F-18"))  # fmt: skip
                for k in range(0, 1321, 120):
                    value = 800.0 * math.exp(-math.log(2) * k / F18_S)
                    feed("reading", _reading("dc", "activity", 1205 + k, value, unit="MBq",
                                             nuclide="F-18"))  # fmt: skip
                assay = desk.run(batch).assay
                assert assay["identity"] == "pass" and assay["readings_before_settled"] == 3
                assert abs(assay["half_life_min"] - 109.77) < 0.01
                assert assay["measured_mbq"] == 800.0 and assay["readings_count"] == 10  # ≥ 10 points
            else:
                # Readings that never agree: fitted whole after the window, and they fail.
                for k in range(0, 661, 30):
                    value = 800.0 * (1.0 + 0.05 * (-1) ** (k // 30))
                    feed("reading", _reading("dc", "activity", 1200 + k, value, unit="MBq",
                                             nuclide="F-18"))  # fmt: skip
                assay = desk.run(batch).assay
                assert assay["identity"] == "fail" and assay["readings_before_settled"] == 0
                assert assay["readings_count"] == 21


async def test_release_rules_and_nothing_unreleased_is_dispensed(tmp_path: Path) -> None:  # noqa: PLR0915
    config = RecordsSection.model_validate({
        **CONFIG, "release": {"sterility_pending_allowed": False},
        "synthesis": [{**CONFIG["synthesis"][0], "environment": {}}],
    })  # fmt: skip
    clock = Clock()
    async with RecordsBench(tmp_path, config) as bench:
        bench.desk.now = clock
        desk = BatchDesk(bench.desk, config, now=clock)
        _run(desk, clock)
        record = await desk.sign("FDG-1", GOOD_TESTS, "quinn", PASSWORDS["quinn"])
        assert record["result"] == "pass" and record["pending"] == ["sterility"]
        scheduled = clock.now + timedelta(minutes=60)
        rx = type("Rx", (), {"id": "RX1", "nuclide": "F-18", "activity_mbq": 300.0,
                             "scheduled": scheduled})()  # fmt: skip
        doses = DispensingDesk(bench.desk, prescription={"RX1": rx}.__getitem__,
                               calibrator_release=lambda _d: "released")  # fmt: skip
        measured = 300.0 * 2 ** (((scheduled - T0).total_seconds() - 1860) / F18_S)
        doses.on_item("reading", _reading("dc", "activity", 1860, measured, unit="MBq",
                                          nuclide="F-18"))  # fmt: skip
        clock.now = T0 + timedelta(seconds=1870)

        async def dispense(**kw):
            args = {"prescription_id": "RX1", "patient_id": "H-1", "volume_ml": 1.0,
                    "device": "dc", "name": "tess", "password": PASSWORDS["tess"], **kw}
            return await doses.dispense("FDG-1", **args)

        with pytest.raises(DispensingError) as unreleased:
            await dispense()
        assert unreleased.value.code == "batch_not_released"
        release = ReleaseDesk(bench.desk)
        with pytest.raises(ReleaseError) as pending:
            await release.decide("FDG-1", "released", name="quentin",
                                 password=PASSWORDS["quentin"])  # fmt: skip
        assert pending.value.code == "pending"
    config = config.model_copy(update={"release": config.release.model_copy(
        update={"sterility_pending_allowed": True})})  # fmt: skip
    async with RecordsBench(tmp_path, config) as bench:
        bench.desk.now = clock
        release = ReleaseDesk(bench.desk)
        # Segregation of duties: the performer of the batch record does not release it.
        with pytest.raises(SignatureError) as own:
            await release.decide("FDG-1", "released", name="quinn", password=PASSWORDS["quinn"])
        assert own.value.reason == "self_approval"
        decision = await release.decide("FDG-1", "released", name="quentin",
                                        password=PASSWORDS["quentin"])  # fmt: skip
        assert decision["procedure"].startswith("SOP-REL") and decision["pending"] == ["sterility"]
        doses = DispensingDesk(bench.desk, prescription={"RX1": rx}.__getitem__,
                               calibrator_release=lambda _d: "on_hold")  # fmt: skip
        doses.on_item("reading", _reading("dc", "activity", 1860, measured, unit="MBq",
                                          nuclide="F-18"))  # fmt: skip
        with pytest.raises(DispensingError) as held:
            await dispense()
        assert held.value.code == "calibrator_not_released"
        doses.calibrator_release = lambda _d: "released"
        with pytest.raises(DispensingError) as names:
            await dispense(patient_name="Jane Doe")
        assert names.value.code == "names_not_enabled"
        doses.latest["dc"] = {**doses.latest["dc"], "value": measured * 1.25}
        with pytest.raises(DispensingError) as beyond:
            await dispense()
        assert beyond.value.code == "dose_outside_limit"
        doses.latest["dc"] = {**doses.latest["dc"], "value": measured * 1.15}
        dose = await dispense()
        assert dose["result"] == "action" and dose["deviation_pct"] == pytest.approx(15.0, abs=0.01)
        assert dose["patient"] == {"hospital_number": "H-1"}
        assert dose["release"] == decision["id"]
        # The syringe label: trefoil, product, activity at the stated time, batch, expiry.
        text = await asyncio.to_thread(_label_text, dose, tmp_path)
        assert "РАДИОАКТИВНО" in text and "[18F]FDG" in text and "партия FDG-1" in text
        assert "объём 1 мл" in text and "годен до" in text and "пациент H-1" in text
        assert "МБк на 05.12.2026 12:20 Asia/Almaty" in text  # the prescription's time


def _label_text(dose: dict, tmp_path: Path) -> str:
    pdf = tmp_path / "label.pdf"
    pdf.write_bytes(label_pdf(dose, zone=ZONE, lang="ru"))
    out = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True,
                         check=True, timeout=60)
    return " ".join(out.stdout.split())


async def test_a_run_in_progress_survives_a_restart(tmp_path: Path) -> None:
    """Desks re-created on the same state database mid-run still assemble the batch record."""
    config = RecordsSection.model_validate(CONFIG)
    clock = Clock()
    async with RecordsBench(tmp_path, config) as bench:
        bench.desk.now = clock
        desk = BatchDesk(bench.desk, config, now=clock)
        await desk.open()
        feed = desk.on_item
        feed("reading", _event("RunStarted", 0, step="trap"))
        for s, p in enumerate([-80, -5, -4, -85, -82]):
            feed("reading", _reading("cell", "p", 10 + s, p))
        feed("reading", _event("StepChanged", 120, step="elute"))
        await bench.state.settle()
    async with RecordsBench(tmp_path, config) as bench:  # the agent restarted
        bench.desk.now = clock
        desk = BatchDesk(bench.desk, config, now=clock)
        assert desk.runs() == []
        await desk.open()
        run = desk.run("FDG-1")
        assert run.state == "running" and [s["step"] for s in run.steps] == ["trap", "elute"]
        feed = desk.on_item
        feed("reading", _reading("cell", "p", 130, -90))  # the run continues after the restart
        feed("reading", _event("EndOfSynthesis", 1080, step="end", eos_activity=40000.0,
                               eos_activity_unit="MBq", eos_time=_t(1080), yield_pct=62.0))
        await bench.state.settle()
    async with RecordsBench(tmp_path, config) as bench:  # and again, after its EOS
        bench.desk.now = clock
        desk = BatchDesk(bench.desk, config, now=clock)
        await desk.open()
        assert desk.run("FDG-1").state == "eos"
        clock.now = T0 + timedelta(seconds=1200)
        desk.start_assay("FDG-1")
        for k in range(0, 661, 30):
            value = 800.0 * math.exp(-math.log(2) * k / F18_S)
            desk.on_item("reading", _reading("dc", "activity", 1200 + k, value, unit="MBq",
                                             nuclide="F-18"))  # fmt: skip
        record = await desk.sign("FDG-1", GOOD_TESTS, "tess", PASSWORDS["tess"])
        assert [s["step"] for s in record["steps"]] == ["trap", "elute", "end"]
        assert record["start_event"] is True and record["started"] == rfc3339(T0)
        pressure = {e["quantity"]: e for e in record["environment"]}["pressure"]
        assert pressure["readings"] == 6 and (pressure["min"], pressure["max"]) == (-90, -4)
        assert [e["extreme"] for e in pressure["excursions"]] == [-4]
        with bench.db() as db, pytest.raises(Exception, match="append-only"):
            db.execute("DELETE FROM batch_journal")
    async with RecordsBench(tmp_path, config) as bench:  # signed: nothing left to reload
        desk = BatchDesk(bench.desk, config, now=clock)
        await desk.open()
        assert desk.runs() == []
