"""Tc-99m and Ga-68 elution records: simulated calibrator readings → judged, signed records."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pytest
from generator_harness import CalibratorBench, rules
from helpers import wait_for_condition
from qc_harness import PASSWORDS

from agent.records.elution import ElutionDesk, ElutionError
from agent.records.kinds import record_sha256, verify
from agent.records.release import ReleaseDesk, ReleaseError

TESS = PASSWORDS["tess"]
QUINN = PASSWORDS["quinn"]


async def test_tc99m_elution_guided_on_the_calibrator_signed(tmp_path: Path) -> None:
    async with CalibratorBench(tmp_path) as bench:
        desk = bench.elutions
        run = desk.start_elution("TCG-1", by="tess", volume_ml=5.0)
        assert [s.setting for s in run.steps] == ["Tc-99m", "Mo-99"]
        await bench.elute_tc(run, eluate_mbq=2000.0, canister_reading_mbq=0.05)
        assert run.state == "measured"
        tc, mo = run.steps
        assert tc.measured == pytest.approx(2000.0, rel=0.03)
        assert mo.measured == pytest.approx(0.05, abs=0.02)
        # every reading the steps rest on was taken on the step's setting, after the go-ahead
        by_id = {r.id: r for r in bench.readings}
        assert {by_id[i].nuclide for i in tc.readings} == {"Tc-99m"}
        assert {by_id[i].nuclide for i in mo.readings} == {"Mo-99"}
        assert all(by_id[i].t >= mo.confirmed_at for i in mo.readings)  # type: ignore[operator]
        with pytest.raises(ElutionError, match="nothing to sign"):
            await desk.sign(run.id, name="tess", password=TESS)
        desk.enter_aluminium(run.id, by="tess", colour="lighter")
        draft = run.draft
        assert draft is not None
        ratio = draft["mo99_ratio_kbq_per_mbq"]
        # R0 = reading (kBq) x CF / Tc-99m, both back at the end of elution
        assert ratio == pytest.approx(mo.measured * 1000 * 2.0 / tc.measured, rel=0.01)  # type: ignore[operator]
        assert draft["result"] == "pass" and not draft["held"]
        record = await desk.sign(run.id, name="tess", password=TESS)
        assert record["kind"] == "elution" and record["part"] == "elution"
        assert record["eluate_id"].startswith("ELU-TCG-1-")
        assert verify(record) == []
        assert record["signatures"][0]["meaning"] == "performed"
        assert record["signatures"][0]["record_sha256"] == record_sha256(record)
        assert record["tc99m_readings"] == tc.readings
        assert record["mo99_limit"]["source"].startswith("10 CFR 35.204")
        use_by = dt.datetime.fromisoformat(record["use_by"])
        elution = dt.datetime.fromisoformat(record["elution_time"])
        # use-by: ln(0.15/R0)/(λTc - λMo), λTc - λMo = 0.104725 /h, at most the 12 h shelf life
        hours = min(math.log(0.15 / ratio) / 0.104725, 12.0)
        assert (use_by - elution).total_seconds() / 3600 == pytest.approx(hours, abs=1e-3)
        assert record["use_by_limited_by"] == ("shelf_life" if hours == 12.0 else "mo99")
        assert record["efficiency_pct"] > 0
        published = await bench.stream("qc")
        assert [i["id"] for i in published if i.get("kind") == "elution"] == [record["id"]]
        state = await desk.eluate_state(record["eluate_id"])
        assert state["state"] == "usable"
        assert record["expiry"] == record["use_by"]
        # the qualified person (not the performer) releases the eluate
        release = await ReleaseDesk(bench.desk).decide(
            record["eluate_id"], "released", kind="elution", name="quinn", password=QUINN)
        assert release["decision"] == "released" and release["expiry"] == record["use_by"]


async def test_failed_elution_holds_the_eluate_and_alerts(tmp_path: Path) -> None:
    async with CalibratorBench(tmp_path) as bench:
        desk = bench.elutions
        run = desk.start_elution("TCG-1", by="tess")
        # 0.3 MBq x 2.0 = 600 kBq on 2000 MBq: 0.3 kBq/MBq > 0.15
        await bench.elute_tc(run, eluate_mbq=2000.0, canister_reading_mbq=0.3)
        desk.enter_aluminium(run.id, by="tess", concentration_ug_ml=8.0)  # > 5 µg/mL Ph. Eur.
        assert run.draft is not None
        assert run.draft["held"] is True
        assert run.draft["use_by"] is None
        assert run.draft["hold_reasons"] == ["mo99_over_limit", "aluminium_over_limit"]
        record = await desk.sign(run.id, name="tess", password=TESS)
        state = await desk.eluate_state(record["eluate_id"])
        assert state == {"eluate_id": record["eluate_id"], "state": "held",
                         "reasons": ["aluminium_over_limit", "mo99_over_limit"]}
        with pytest.raises(ReleaseError) as refused:  # a held eluate can only be rejected
            await ReleaseDesk(bench.desk).decide(
                record["eluate_id"], "released", kind="elution", name="quinn", password=QUINN)
        assert refused.value.code == "failed"
        alert = bench.state.alerts.active_alert("records.elution", "dc1", None,
                                                record["eluate_id"])
        assert alert is not None and alert.severity == "alarm"


async def test_readings_on_the_wrong_setting_do_not_complete_a_step(tmp_path: Path) -> None:
    async with CalibratorBench(tmp_path) as bench:
        desk, sim = bench.elutions, bench.simulator
        run = desk.start_elution("TCG-1", by="tess")
        sim.load_sample("Tc-99m", 1500.0)
        desk.confirm_step(run.id, 1, by="tess")
        sim.set_nuclide("F-18")  # the operator forgot the selector
        count = len(bench.readings)
        await wait_for_condition(lambda: len(bench.readings) > count + 8, timeout=20)
        assert run.steps[0].state == "active"
        assert run.steps[0].seen_setting == "F-18"
        sim.set_nuclide("Tc-99m")
        await wait_for_condition(lambda: run.steps[0].state == "done", timeout=20)
        assert run.steps[1].state == "active" and run.steps[1].waiting_for_operator


async def test_second_elution_yield_from_the_first(tmp_path: Path) -> None:
    async with CalibratorBench(tmp_path) as bench:
        desk = bench.elutions
        now = dt.datetime.now(dt.UTC)
        first = desk.start_elution("TCG-1", by="tess", elution_time=now - dt.timedelta(hours=6))
        await bench.elute_tc(first, 2000.0, 0.05)
        desk.enter_aluminium(first.id, by="tess", colour="equal")
        one = await desk.sign(first.id, name="tess", password=TESS)
        second = desk.start_elution("TCG-1", by="tess", elution_time=now)
        await bench.elute_tc(second, 2000.0, 0.05)
        desk.enter_aluminium(second.id, by="tess", colour="lighter")
        two = await desk.sign(second.id, name="tess", password=TESS)
        # the first elution: column in equilibrium; the second: 6 h of growth (1 - e^-0.628)
        assert two["available_mbq"] / two["mo99_at_elution_mbq"] == pytest.approx(
            0.8773 * 1.100374 * (1 - 0.533488), rel=1e-3
        )
        assert one["available_mbq"] / one["mo99_at_elution_mbq"] == pytest.approx(
            0.8773 * 1.100374, rel=1e-4
        )
        history = await desk.history("TCG-1")
        assert [r["id"] for r in history] == [two["id"], one["id"]]
        # a new desk learns the last elution from the store
        again = ElutionDesk(rules(), list(desk.generators.values()), bench.desk)
        await again.open()
        assert again._last_elution["TCG-1"] == dt.datetime.fromisoformat(two["elution_time"])


async def test_generator_receipt_record(tmp_path: Path) -> None:
    async with CalibratorBench(tmp_path) as bench:
        record = await bench.elutions.record_generator("TCG-1", name="tess",
                                                       password=TESS)
        assert record["part"] == "generator" and record["parent"] == "Mo-99"
        assert record["reference_mbq"] == 20_000.0
        assert verify(record) == []
        stored = await bench.desk.listing("elution", subject="TCG-1")
        assert [r["id"] for r in stored] == [record["id"]]


async def test_ga68_elution_identity_by_half_life(tmp_path: Path) -> None:
    clock = {"now": dt.datetime.now(dt.UTC)}
    async with CalibratorBench(tmp_path, nuclide="Ga-68", time_scale=300.0) as bench:
        desk = bench.elutions
        desk.rules = rules(identity_points=8, identity_interval_s=0.5)
        # the simulated eluate decays 300x fast: the fit scales the readings' times back
        run = desk.start_elution("GAG-1", by="tess", time_scale=300.0)
        bench.simulator.load_sample("Ga-68", 800.0)
        desk.confirm_step(run.id, 1, by="tess")
        await wait_for_condition(lambda: run.state == "completed", timeout=30)
        assert run.draft is not None
        assert 62.0 <= run.draft["half_life_min"] <= 74.0
        assert run.draft["identity_passed"] is True and run.draft["held"] is False
        first = await desk.sign(run.id, name="tess", password=TESS)
        assert first["part"] == "elution" and first["nuclide"] == "Ga-68"
        assert verify(first) == []
        due = dt.datetime.fromisoformat(first["ge68_due"])
        assert due - dt.datetime.fromisoformat(first["elution_time"]) == dt.timedelta(hours=48)
        reminders = await desk.reminders()
        assert [r["eluate_id"] for r in reminders] == [first["eluate_id"]]
        assert reminders[0]["is_due"] is False
        with pytest.raises(ElutionError, match="due at"):
            desk.start_remeasurement(first, by="tess")
        desk._now = lambda: clock["now"] + dt.timedelta(hours=49)
        assert (await desk.reminders())[0]["is_due"] is True


async def test_ga68_wrong_nuclide_fails_identity_and_holds(tmp_path: Path) -> None:
    async with CalibratorBench(tmp_path, nuclide="F-18", time_scale=300.0) as bench:
        desk = bench.elutions
        desk.rules = rules(identity_points=8, identity_interval_s=0.5)
        run = desk.start_elution("GAG-1", by="tess", time_scale=300.0)
        bench.simulator.load_sample("F-18", 800.0)  # F-18 in the vial (T½ 109.8 min)
        bench.simulator.set_nuclide("Ga-68")
        desk.confirm_step(run.id, 1, by="tess")
        await wait_for_condition(lambda: run.state == "completed", timeout=30)
        assert run.draft is not None
        assert run.draft["half_life_min"] > 74.0
        assert run.draft["held"] is True
        assert run.draft["hold_reasons"] == ["identity_half_life_outside_window"]


async def test_ga68_eluate_that_does_not_decay_is_held(tmp_path: Path) -> None:
    async with CalibratorBench(tmp_path, nuclide="Ge-68", time_scale=300.0) as bench:
        desk = bench.elutions
        desk.rules = rules(identity_points=8, identity_interval_s=0.5)
        run = desk.start_elution("GAG-1", by="tess", time_scale=300.0)
        bench.simulator.load_sample("Ge-68", 800.0)  # T½ 271 d: flat over minutes
        bench.simulator.set_nuclide("Ga-68")
        desk.confirm_step(run.id, 1, by="tess")
        await wait_for_condition(lambda: run.state == "completed", timeout=30)
        assert run.draft is not None
        assert run.draft["identity_passed"] is False
        assert run.draft["held"] is True
        record = await desk.sign(run.id, name="tess", password=TESS)
        assert verify(record) == []


async def test_ge68_remeasurement_after_48_hours(tmp_path: Path) -> None:
    async with CalibratorBench(tmp_path, nuclide="Ga-68") as bench:
        desk = bench.elutions
        now = dt.datetime.now(dt.UTC)
        # The eluate's elution record, signed 49 h ago (as the Ga-68 elution makes it)
        first = await bench.desk.signer.sign(bench.desk.draft(
            "elution", part="elution", generator_id="GAG-1", eluate_id="ELU-GAG-1-X",
            nuclide="Ga-68", device="dc1", elution_time=(now - dt.timedelta(hours=49)).isoformat(),
            volume_ml=5.0, ga68_mbq=800.0, ge68_due=(now - dt.timedelta(hours=1)).isoformat(),
            held=False, hold_reasons=[], result="pass",
        ), "tess", TESS, "performed")
        assert (await desk.reminders())[0]["is_due"] is True
        run = desk.start_remeasurement(first, by="tess")
        # what is left after 49 h: Ga-68 in equilibrium with the Ge-68 that broke through
        bench.simulator.load_sample("Ge-68", 0.004)
        bench.simulator.set_nuclide("Ga-68")
        desk.confirm_step(run.id, 1, by="tess")
        await wait_for_condition(lambda: run.state == "completed", timeout=30)
        draft = run.draft
        assert draft is not None and draft["part"] == "ge68"
        measured = run.steps[0].measured
        assert measured is not None
        elapsed = draft["elapsed_h"] * 3600
        lam_ge = math.log(2) / (270.95 * 86400)
        expected = measured * math.exp(lam_ge * elapsed) / 800.0 * 100
        assert draft["ge68_percent"] == pytest.approx(expected, rel=1e-6)
        # 0.004 MBq on 800 MBq: ~5e-4 % ≤ 0.001 %, above the 0.001 MBq detection limit
        assert draft["above_detection_limit"] is True
        assert draft["ge68_status"] == "passed" and draft["held"] is False
        second = await desk.sign(run.id, name="tess", password=TESS)
        assert second["eluate_id"] == "ELU-GAG-1-X" and second["elution_record"] == first["id"]
        assert await desk.reminders() == []
        assert (await desk.eluate_state("ELU-GAG-1-X"))["state"] in {"usable", "expired"}


async def test_ge68_below_the_detection_limit_is_reported(tmp_path: Path) -> None:
    async with CalibratorBench(tmp_path, nuclide="Ga-68", noise=False) as bench:
        desk = bench.elutions
        now = dt.datetime.now(dt.UTC)
        first = await bench.desk.signer.sign(bench.desk.draft(
            "elution", part="elution", generator_id="GAG-1", eluate_id="ELU-GAG-1-Y",
            nuclide="Ga-68", device="dc1", elution_time=(now - dt.timedelta(hours=50)).isoformat(),
            volume_ml=5.0, ga68_mbq=50.0, ge68_due=(now - dt.timedelta(hours=2)).isoformat(),
            held=False, hold_reasons=[], result="pass",
        ), "tess", TESS, "performed")
        run = desk.start_remeasurement(first, by="tess")
        bench.simulator.empty()  # nothing above background
        bench.simulator.set_nuclide("Ga-68")
        desk.confirm_step(run.id, 1, by="tess")
        await wait_for_condition(lambda: run.state == "completed", timeout=30)
        assert run.draft is not None
        # bound: 0.001 MBq x e^(λGe·50 h) / 50 MBq x 100 = 0.002 % > 0.001 %: inconclusive
        assert run.draft["above_detection_limit"] is False
        assert run.draft["ge68_status"] == "inconclusive_below_detection_limit"
        assert run.draft["result"] == "inconclusive" and run.draft["held"] is True
