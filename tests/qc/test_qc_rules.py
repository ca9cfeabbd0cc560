"""QC rules through QCEngine: raise, no flapping under noise, clear, ack, restart."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import TypeAdapter
from statestore import StateStore

from agent.core.reading import Reading
from agent.physics import NUCLIDES, NuclideTable
from agent.qc import QCEngine
from agent.qc.config import RuleConfig
from drivers.base import Quality

T0 = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
RULE = TypeAdapter(RuleConfig)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Harness:
    """Engine + alert manager on a database in tmp_path; `restart()` reopens both."""

    def __init__(self, tmp_path, rules, polls=None):
        self.path = tmp_path
        self.rules = [RULE.validate_python(r) for r in rules]
        self.polls = polls or {}
        self.clock = Clock()
        self.events = []

    async def open(self):
        self.store = await StateStore(self.path, heard=self._emit).open()
        self.audit = self.store.audit
        self.alerts = self.store.alerts
        self.engine = QCEngine(self.rules, self.alerts, NuclideTable(), self.polls, self.clock)
        return self

    def _emit(self, stream, item):
        self.events.append((stream, item))

    async def restart(self):
        await self.store.close()
        await self.open()

    async def close(self):
        await self.store.close()

    def feed(self, device, channel, value, unit, *, dt=1.0, t=None, nuclide=None, quality=None):
        self.clock.now += dt
        self.engine.on_reading(
            Reading(
                device=device, channel=channel, t=t or T0, value=value, unit=unit,
                quality=quality or Quality.GOOD, raw_value=value, raw_unit=unit, nuclide=nuclide,
            )
        )  # fmt: skip

    def alert_events(self):
        return [i["event"] for s, i in self.events if s == "alerts"]

    def open_alerts(self):
        return self.alerts.open_alerts()


@pytest.fixture
async def make(tmp_path):
    made = []

    async def _make(rules, polls=None):
        h = await Harness(tmp_path, rules, polls).open()
        made.append(h)
        return h

    yield _make
    for h in made:
        await h.close()


async def _ack_and_check_closed(h, alert_id):
    await h.alerts.acknowledge(alert_id, "QA Officer", "checked on site")
    assert (await h.alerts.fetch(alert_id)).state == "closed"
    assert (await h.audit.query(action="alert.acknowledged"))[-1]["actor"] == "QA Officer"


# ------------------------------------------------------------------ threshold
AREA = {
    "name": "area-dose", "type": "threshold", "device": "am1", "channel": "dose_rate",
    "high": 2.5, "hysteresis": 0.3, "min_duration_s": 5, "severity": "alarm", "unit": "uSv/h",
}  # fmt: skip


async def test_threshold_raises_after_min_duration_and_clears_with_hysteresis(make):
    h = await make([AREA])
    for _ in range(4):
        h.feed("am1", "dose_rate", 3.0, "uSv/h")
    assert h.alert_events() == []  # 4 s above: not yet 5 s
    h.feed("am1", "dose_rate", 2.0, "uSv/h")  # a dip resets the duration
    for _ in range(6):
        h.feed("am1", "dose_rate", 3.0, "uSv/h")
    assert h.alert_events() == ["alert.raised"]
    (alert,) = h.open_alerts()
    assert alert.severity == "alarm"
    assert "above 2.5" in alert.text()
    h.feed("am1", "dose_rate", 2.4, "uSv/h")  # below high but inside the hysteresis band
    assert h.alert_events() == ["alert.raised"]
    h.feed("am1", "dose_rate", 2.1, "uSv/h")
    assert h.alert_events() == ["alert.raised", "alert.cleared"]
    await _ack_and_check_closed(h, alert.id)


async def test_threshold_does_not_flap_under_noise(make):
    h = await make([{**AREA, "min_duration_s": 0}])
    rng = random.Random(1)
    h.feed("am1", "dose_rate", 3.0, "uSv/h")
    for _ in range(500):  # noise of ±0.25 around the limit: inside the 0.3 band once raised
        h.feed("am1", "dose_rate", 2.5 + rng.uniform(-0.25, 0.25), "uSv/h")
    assert h.alert_events() == ["alert.raised"]


async def test_threshold_low_limit_for_hot_cell_pressure(make):
    rule = {"name": "hc-pressure", "type": "threshold", "device": "hc1", "channel": "pressure",
            "high": -20.0, "hysteresis": 2.0, "severity": "critical"}  # fmt: skip
    h = await make([rule])
    h.feed("hc1", "pressure", -35.0, "Pa")
    h.feed("hc1", "pressure", -15.0, "Pa")  # not negative enough
    assert h.alert_events() == ["alert.raised"]
    h.feed("hc1", "pressure", -21.0, "Pa")  # within hysteresis: still raised
    h.feed("hc1", "pressure", -23.0, "Pa")
    assert h.alert_events() == ["alert.raised", "alert.cleared"]


async def test_threshold_survives_restart(make):
    h = await make([{**AREA, "min_duration_s": 0}])
    h.feed("am1", "dose_rate", 5.0, "uSv/h")
    (alert,) = h.open_alerts()
    await h.alerts.acknowledge(alert.id, "QA", "shielding being checked")
    await h.restart()
    h.feed("am1", "dose_rate", 5.0, "uSv/h")  # still high: no second alert
    assert h.alert_events().count("alert.raised") == 1
    h.feed("am1", "dose_rate", 0.2, "uSv/h")  # clears the alert raised before the restart
    assert (await h.alerts.fetch(alert.id)).state == "closed"


async def test_unmatched_and_unusable_readings_are_ignored(make):
    h = await make([{**AREA, "min_duration_s": 0}])
    h.feed("am2", "dose_rate", 99.0, "uSv/h")
    h.feed("am1", "temperature", 99.0, "Cel")
    h.feed("am1", "dose_rate", None, "uSv/h", quality=Quality.BAD)
    h.feed("am1", "dose_rate", 99.0, "mSv/h")  # limits are in uSv/h
    assert h.alert_events() == []


# ------------------------------------------------------------------ temperature, rate of change
async def test_temperature_band_and_rate_of_change(make):
    temp = {
        "name": "hc-temp",
        "type": "threshold",
        "device": "hc1",
        "channel": "temperature",
        "low": 15.0,
        "high": 30.0,
        "hysteresis": 1.0,
    }
    rate = {"name": "hc-temp-rate", "type": "rate_of_change", "device": "hc1",
            "channel": "temperature", "max_rise_per_min": 2.0, "window_s": 60,
            "hysteresis": 0.5}  # fmt: skip
    h = await make([temp, rate])
    for _ in range(120):
        h.feed("hc1", "temperature", 22.0, "Cel")
    assert h.alert_events() == []
    value = 22.0
    for _ in range(90):  # +3 °C/min
        value += 0.05
        h.feed("hc1", "temperature", value, "Cel")
    rate_alerts = [a for a in h.open_alerts() if a.rule == "hc-temp-rate"]
    assert len(rate_alerts) == 1
    assert 2.0 < rate_alerts[0].value <= 3.0 + 1e-9  # raised as the rate crossed the limit
    rng = random.Random(3)
    for _ in range(200):  # flat with noise: rate falls back under 1.5/min, clears once
        h.feed("hc1", "temperature", value + rng.uniform(-0.02, 0.02), "Cel")
    rate_events = [i["event"] for s, i in h.events if s == "alerts" and i["rule"] == "hc-temp-rate"]
    assert rate_events == ["alert.raised", "alert.cleared"]
    await _ack_and_check_closed(h, rate_alerts[0].id)


# ------------------------------------------------------------------ background
async def test_background_too_high(make):
    rule = {"name": "dc1-bkg", "type": "background", "device": "dc1", "max": 5, "unit": "uCi",
            "hysteresis": 0.01}  # fmt: skip
    h = await make([rule])
    h.feed("dc1", "background", 0.1, "MBq")  # 2.7 µCi
    assert h.alert_events() == []
    h.feed("dc1", "background", 0.2, "MBq")  # 5.4 µCi
    (alert,) = h.open_alerts()
    assert "background" in alert.text()
    h.feed("dc1", "background", 0.18, "MBq")  # 4.86 µCi: inside the 0.01 MBq band
    assert h.alert_events() == ["alert.raised"]
    h.feed("dc1", "background", 0.05, "MBq")
    assert h.alert_events() == ["alert.raised", "alert.cleared"]
    await h.restart()
    assert h.alerts.get(alert.id).state == "cleared_unacknowledged"
    await _ack_and_check_closed(h, alert.id)


# ------------------------------------------------------------------ stale, offline
async def test_stale_after_factor_times_poll_interval(make):
    h = await make([{"name": "am1-stale", "type": "stale", "device": "am1", "factor": 3}], {"am1": 2.0})
    h.clock.now += 5
    h.engine.tick()
    assert h.alert_events() == []
    h.clock.now += 2
    h.engine.tick()
    h.engine.tick()
    assert h.alert_events() == ["alert.raised"]  # raised once, not per tick
    await h.restart()
    h.engine.tick()
    assert h.alert_events() == ["alert.raised"]
    h.feed("am1", "dose_rate", 0.1, "uSv/h")
    assert h.alert_events() == ["alert.raised", "alert.cleared"]
    for _ in range(50):  # readings on time: never stale again
        h.feed("am1", "dose_rate", 0.1, "uSv/h", dt=1.9)
        h.engine.tick()
    assert h.alert_events() == ["alert.raised", "alert.cleared"]
    await _ack_and_check_closed(h, (await h.alerts.all_alerts())[0].id)


async def test_stale_is_quiet_while_the_device_is_offline(make):
    h = await make([{"name": "s", "type": "stale", "device": "am1", "after_s": 3}], {"am1": 1.0})
    h.engine.on_device_state("am1", "offline", "timeout")
    h.clock.now += 60
    h.engine.tick()
    assert h.alert_events() == []
    h.engine.on_device_state("am1", "online", None)
    h.clock.now += 2
    h.engine.tick()
    assert h.alert_events() == []  # fresh grace period after reconnecting
    h.clock.now += 2
    h.engine.tick()
    assert h.alert_events() == ["alert.raised"]


async def test_device_offline_degraded_and_back(make):
    rule = {"name": "offline", "type": "device_offline", "after_s": 30}
    h = await make([rule])
    h.engine.on_device_state("dc1", "online", None)
    h.engine.on_device_state("dc1", "offline", "connection refused")
    h.clock.now += 10
    h.engine.on_device_state("dc1", "connecting", None)  # reconnect attempts: still down
    h.clock.now += 10
    h.engine.on_device_state("dc1", "offline", "timeout")
    h.engine.tick()
    assert h.alert_events() == []
    h.clock.now += 11
    h.engine.tick()
    h.engine.tick()
    assert h.alert_events() == ["alert.raised"]
    (alert,) = h.open_alerts()
    assert alert.severity == "alarm"
    assert "timeout" in alert.text()
    await h.restart()
    h.engine.on_device_state("dc1", "online", None)
    assert h.alert_events() == ["alert.raised", "alert.cleared"]
    h.engine.on_device_state("dc1", "degraded", "unit 3 not answering")
    h.clock.now += 31
    h.engine.tick()
    degraded = [a for a in h.open_alerts() if a.active]
    assert degraded[0].severity == "warning"
    h.engine.on_device_state("dc1", "offline", "link lost")
    h.clock.now += 31
    h.engine.tick()
    assert h.alert_events()[-1] == "alert.updated"  # same alert, severity warning -> alarm
    assert h.alerts.get(degraded[0].id).severity == "alarm"
    await _ack_and_check_closed(h, alert.id)


async def test_flapping_link_does_not_raise_before_after_s(make):
    h = await make([{"name": "offline", "type": "device_offline", "after_s": 30}])
    for _ in range(100):
        h.engine.on_device_state("dc1", "offline", "x")
        h.clock.now += 5
        h.engine.tick()
        h.engine.on_device_state("dc1", "online", None)
        h.clock.now += 1
    assert h.alert_events() == []


# ------------------------------------------------------------------ constancy
CS137 = {
    "name": "dc1-constancy", "type": "constancy", "device": "dc1", "channel": "activity",
    "source": {"id": "Cs-137 SN 4711", "nuclide": "Cs-137", "activity": 7.4, "unit": "MBq",
               "reference_date": "2016-03-02T07:00:00Z"},
    "action_pct": 5, "fail_pct": 10,
}  # fmt: skip


def _cs137_expected():
    years = (T0 - datetime(2016, 3, 2, 7, tzinfo=UTC)).total_seconds()
    return 7.4 * math.exp(-math.log(2) * years / NUCLIDES["Cs-137"].half_life_s)


def _measure(h, value, *, nuclide="Cs-137", n=6, noise=0.002, rng=None, gap=1.0):
    rng = rng or random.Random(0)
    for _ in range(n):
        h.feed("dc1", "activity", value * (1 + rng.uniform(-noise, noise)), "MBq", dt=gap,
               nuclide=nuclide)  # fmt: skip


def _remove_source(h):
    h.feed("dc1", "activity", 0.001, "MBq", nuclide="Cs-137", dt=120)


async def test_constancy_pass_action_fail_and_clear(make):
    h = await make([CS137])
    expected = _cs137_expected()
    _measure(h, expected * 1.02)
    assert h.alert_events() == []
    results = (await h.audit.query(action="qc.constancy"))
    assert results[-1]["new"]["result"] == "pass"
    assert results[-1]["expected_mbq"] == pytest.approx(expected)
    _remove_source(h)
    _measure(h, expected * 0.93)  # -7%: action band
    (alert,) = h.open_alerts()
    assert alert.severity == "warning"
    assert "constancy action" in alert.text()
    _remove_source(h)
    _measure(h, expected * 0.85)  # -15%: fail
    assert h.alerts.get(alert.id).severity == "alarm"
    assert h.alert_events() == ["alert.raised", "alert.updated"]
    await h.restart()
    _measure(h, expected * 1.0)
    assert h.alert_events() == ["alert.raised", "alert.updated", "alert.cleared"]
    await _ack_and_check_closed(h, alert.id)


async def test_constancy_judged_once_per_measurement_despite_noise_at_band_edge(make):
    h = await make([CS137])
    expected = _cs137_expected()
    rng = random.Random(5)
    _measure(h, expected * 1.05, n=300, noise=0.004, rng=rng)  # right on the action edge
    assert len(await h.audit.query(action="qc.constancy")) == 1
    assert len(h.alert_events()) <= 1


async def test_constancy_ignores_other_nuclides_and_unsettled_readings(make):
    h = await make([CS137])
    expected = _cs137_expected()
    _measure(h, expected * 0.5, nuclide="F-18")
    for k in range(10):  # ramping up as the source goes in: never settled
        h.feed("dc1", "activity", expected * (0.6 + 0.04 * k), "MBq", nuclide="Cs-137")
    assert (await h.audit.query(action="qc.constancy")) == []


# ------------------------------------------------------------------ dosage
DOSAGE = {
    "name": "dc1-dosage", "type": "dosage", "device": "dc1", "channel": "activity",
    "prescriptions": [{"id": "RX-1", "nuclide": "F-18", "activity": 370, "unit": "MBq",
                       "scheduled": "2026-03-02T08:00:00Z"}],
}  # fmt: skip


def _f18_at(t, activity_at_schedule, scheduled):
    return activity_at_schedule * 2 ** (
        (scheduled - t).total_seconds() / NUCLIDES["F-18"].half_life_s
    )


def _measure_dose(h, value, t, n=5):
    for k in range(n):
        h.feed("dc1", "activity", value, "MBq", t=t + timedelta(seconds=k), nuclide="F-18")


async def test_dosage_within_site_tolerance_passes(make):
    h = await make([DOSAGE])
    scheduled = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    t = scheduled - timedelta(minutes=60)
    _measure_dose(h, _f18_at(t, 370 * 1.05, scheduled), t)
    assert h.alert_events() == []
    rx = h.engine.prescriptions.get("RX-1")
    assert rx.passed
    assert rx.result["deviation_pct"] == pytest.approx(5.0, abs=0.05)


async def test_dosage_site_tolerance_then_regulatory_limit_then_corrected(make):
    h = await make([DOSAGE])
    scheduled = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    t = scheduled - timedelta(minutes=45)
    _measure_dose(h, _f18_at(t, 370 * 1.15, scheduled), t)  # +15%: outside site tolerance
    (alert,) = h.open_alerts()
    assert alert.severity == "warning"
    assert alert.subject == "RX-1"
    assert "outside site tolerance" in alert.text()
    h.feed("dc1", "activity", 0.0, "MBq", nuclide="F-18", dt=120)
    t2 = t + timedelta(minutes=5)
    _measure_dose(h, _f18_at(t2, 370 * 1.30, scheduled), t2)  # +30%: beyond the 20% limit
    assert h.alerts.get(alert.id).severity == "critical"
    await h.restart()
    h.feed("dc1", "activity", 0.0, "MBq", nuclide="F-18", dt=120)
    h.engine.add_prescription("RX-1", "F-18", 370, "MBq", scheduled, actor="console", replace=True)
    t3 = t + timedelta(minutes=10)
    _measure_dose(h, _f18_at(t3, 370 * 0.99, scheduled), t3)  # dose adjusted: passes
    assert h.alert_events() == ["alert.raised", "alert.updated", "alert.cleared"]
    await _ack_and_check_closed(h, alert.id)
    assert [r["new"]["result"] for r in (await h.audit.query(action="qc.dosage"))] == [
        "fail",
        "fail",
        "pass",
    ]


async def test_dosage_noise_does_not_flap(make):
    h = await make([DOSAGE])
    scheduled = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    t = scheduled - timedelta(minutes=30)
    base = _f18_at(t, 370 * 1.10, scheduled)  # right on the site tolerance
    rng = random.Random(9)
    for k in range(200):
        h.feed("dc1", "activity", base * (1 + rng.uniform(-0.003, 0.003)), "MBq",
               t=t + timedelta(seconds=k), nuclide="F-18")  # fmt: skip
    assert len(await h.audit.query(action="qc.dosage")) == 1
    assert len(h.alert_events()) <= 1


async def test_dosage_api_prescriptions_ambiguity_and_arming(make):
    h = await make([{**DOSAGE, "prescriptions": []}])
    scheduled = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    h.engine.add_prescription("A", "F-18", 300, "MBq", scheduled, actor="pharmacist")
    h.engine.add_prescription("B", "18F", 10, "mCi", scheduled, actor="pharmacist")
    with pytest.raises(ValueError, match="exists already"):
        h.engine.add_prescription("A", "F-18", 300, "MBq", scheduled)
    with pytest.raises(ValueError, match="time zone"):
        h.engine.add_prescription("C", "F-18", 300, "MBq", scheduled.replace(tzinfo=None))
    with pytest.raises(ValueError, match="unknown nuclide"):
        h.engine.add_prescription("C", "Xx-1", 300, "MBq", scheduled)
    t = scheduled - timedelta(minutes=20)
    _measure_dose(h, _f18_at(t, 300, scheduled), t)
    assert (await h.audit.query(action="qc.dosage"))[-1]["new"]["result"] == "ambiguous"
    h.engine.arm_prescription("dc1", "B")
    h.feed("dc1", "activity", 0.0, "MBq", nuclide="F-18", dt=120)
    _measure_dose(h, _f18_at(t, 370, scheduled), t)
    assert h.engine.prescriptions.get("B").passed
    assert h.alert_events() == []
    h.engine.remove_prescription("A", actor="pharmacist", reason="cancelled")
    assert [r["event"] for r in (await h.audit.query(subject="prescription/A"))] == [
        "prescription.added", "prescription.removed"
    ]  # fmt: skip


# ------------------------------------------------------------------ half-life identity
HALF_LIFE = {"name": "dc1-identity", "type": "half_life", "device": "dc1", "channel": "activity",
             "nuclide": "F-18", "min_points": 5, "min_span_s": 900}  # fmt: skip


def _decay_series(h, half_life_s, *, minutes=20, step_s=60, a0=800.0, noise=0.003, seed=1):
    rng = random.Random(seed)
    for k in range(minutes * 60 // step_s + 1):
        t = k * step_s
        value = a0 * 2 ** (-t / half_life_s) * (1 + rng.gauss(0, noise))
        h.feed("dc1", "activity", value, "MBq", t=T0 + timedelta(seconds=t), nuclide="F-18",
               dt=step_s)  # fmt: skip


async def test_half_life_identity_pass_then_wrong_nuclide_then_clear(make):
    h = await make([HALF_LIFE])
    _decay_series(h, NUCLIDES["F-18"].half_life_s)
    assert h.alert_events() == []
    assert (await h.audit.query(action="qc.half_life"))[-1]["new"]["result"] == "pass"
    _decay_series(h, NUCLIDES["Ga-68"].half_life_s, seed=2)  # Ga-68 labelled F-18
    (alert,) = h.open_alerts()
    assert alert.severity == "alarm"
    assert "not F-18?" in alert.text()
    assert alert.value == pytest.approx(NUCLIDES["Ga-68"].half_life_s, rel=0.05)
    await h.restart()
    _decay_series(h, NUCLIDES["F-18"].half_life_s, seed=3)
    assert h.alert_events() == ["alert.raised", "alert.cleared"]
    await _ack_and_check_closed(h, alert.id)


async def test_half_life_judged_once_per_series_under_noise(make):
    h = await make([{**HALF_LIFE, "min_span_s": 600}])
    _decay_series(h, 115.5 * 60, minutes=60, step_s=10, noise=0.01)  # near the window edge
    assert len(await h.audit.query(action="qc.half_life")) == 1
    assert len(h.alert_events()) <= 1
