"""Rule configuration: documented examples parse; mistakes are clear errors with key paths."""

from __future__ import annotations

import re
import time
import tomllib
from datetime import UTC, datetime

import pytest
from helpers import REPO
from statestore import StateStore

from agent.core.reading import Reading
from agent.physics import NuclideTable
from agent.qc import RuleEngine
from agent.qc.programme import QCSection
from agent.service.config import ConfigError, parse_config
from drivers.base import Quality

DEVICE_IDS = ["area-monitor-1", "hot-cell-1", "dosecal-1", "dc1"]


def _config(*rules):
    return {
        "agent": {"site": "s", "id": "a"},
        "devices": [{"id": d, "type": "synthetic"} for d in DEVICE_IDS],
        "rules": list(rules),
    }


def _problems(*rules):
    with pytest.raises(ConfigError) as info:
        parse_config(_config(*rules), "site.toml")
    return [str(p) for p in info.value.problems]


def test_every_documented_example_parses():
    text = (REPO / "docs" / "qc-rules.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", text, re.DOTALL)
    parsed = [tomllib.loads(block) for block in blocks]
    rules = [rule for data in parsed for rule in data.get("rules", [])]
    programmes = [data["qc"] for data in parsed if "qc" in data]
    assert programmes, "the [qc] programme example is documented"
    for qc in programmes:  # the QC programme example validates too
        assert QCSection.model_validate(qc).calibrators
    assert {r["type"] for r in rules} == {
        "threshold", "rate_of_change", "background", "stale", "device_offline", "constancy",
        "dosage", "half_life",
    }  # fmt: skip
    config = parse_config(_config(*rules), "docs")
    assert len(config.rules) == len(rules)


THRESHOLD = {"name": "t", "type": "threshold", "device": "hot-cell-1", "channel": "p"}
GT0 = "Input should be greater than or equal to 0"
UTC_DATE = "2020-01-01T00:00:00Z"


def _constancy(source=None, **kw):
    src = {"id": "s", "nuclide": "Cs-137", "activity": 7.4, "reference_date": UTC_DATE}
    return {"name": "c", "type": "constancy", "device": "dc1", "source": {**src, **(source or {})},
            **kw}  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({**THRESHOLD, "high": 1.0, "low": 2.0},
         "site.toml: rules[0]: high (1) must be greater than low (2)"),
        ({**THRESHOLD}, "site.toml: rules[0]: give `high`, `low` or both"),
        ({**THRESHOLD, "high": 1.0, "hysterisis": 0.1},
         "site.toml: rules[0].hysterisis: unknown key"),
        ({**THRESHOLD, "high": 1.0, "hysteresis": -1}, f"site.toml: rules[0].hysteresis: {GT0}"),
        ({**THRESHOLD, "high": 1.0, "severity": "urgent"},
         "site.toml: rules[0].severity: Input should be"),
        ({"name": "x", "type": "tresholds"},
         "site.toml: rules[0].type: unknown rule type 'tresholds'"),
        (_constancy(action_pct=10, fail_pct=5),
         "site.toml: rules[0]: action_pct (10) must be less than fail_pct (5)"),
        (_constancy({"nuclide": "Cs-173"}),
         "site.toml: rules[0].source.nuclide: unknown nuclide 'Cs-173'"),
        (_constancy({"reference_date": "2020-01-01T00:00:00"}),
         "site.toml: rules[0].source.reference_date: needs a UTC offset"),
        (_constancy({"unit": "mSv"}),
         "site.toml: rules[0].source.unit: not an activity unit: 'mSv'"),
        ({"name": "d", "type": "dosage", "device": "dc1", "site_tolerance_pct": 25},
         "site.toml: rules[0]: site_tolerance_pct (25) must be less than regulatory_limit_pct"),
        ({"name": "h", "type": "half_life", "device": "dc1", "nuclide": "Tc-99m"},
         "site.toml: rules[0]: give window_min = [low, high] for Tc-99m"),
        ({"name": "h", "type": "half_life", "device": "dc1", "window_min": [115, 105]},
         "site.toml: rules[0]: window_min must be [low, high] with low < high"),
        ({"name": "s", "type": "stale", "device": "nope"},
         "site.toml: rules[0].device: unknown device 'nope'"),
        ({"name": "r", "type": "rate_of_change", "channel": "p"},
         "site.toml: rules[0]: give `max_rise_per_min`, `max_fall_per_min` or both"),
    ],
)  # fmt: skip
def test_rule_errors_name_the_key(rule, expected):
    problems = _problems(rule)
    assert any(p.startswith(expected) for p in problems), problems


def test_duplicate_rule_names_are_refused():
    rule = {**THRESHOLD, "high": 1.0}
    assert any("duplicate rule name 't'" in p for p in _problems(rule, rule))


async def test_unmatched_readings_are_cheap(tmp_path):
    config = parse_config(_config({**THRESHOLD, "high": 1.0}))
    store = await StateStore(tmp_path).open()
    alerts = store.alerts
    engine = RuleEngine(config.rules, alerts, NuclideTable(), {})
    reading = Reading(device="area-monitor-1", channel="dose_rate", t=datetime.now(UTC),
                      value=0.1, unit="uSv/h", quality=Quality.GOOD, raw_value=0.1,
                      raw_unit="uSv/h")  # fmt: skip
    start = time.perf_counter()
    for _ in range(100_000):
        engine.on_reading(reading)
    elapsed = time.perf_counter() - start
    await store.close()
    assert elapsed < 1.0  # 100k readings; the pipeline needs 20k/s with room to spare
