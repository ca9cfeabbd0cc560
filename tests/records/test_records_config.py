"""`[records]`: the rules as cited data, validated, every error naming its key."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import REPO, cli_env, isoedge_cmd
from pydantic import ValidationError

from agent.records.config import RecordsSection


def test_shipped_rules_are_the_cited_values() -> None:
    section = RecordsSection()
    fdg = section.product("fdg")
    assert fdg.half_life_min == (105.0, 115.0) and "1325" in fdg.half_life_basis
    tests = {t.code: t for t in fdg.tests}
    assert (tests["ph"].low, tests["ph"].high) == (4.5, 8.5)
    assert tests["rcp"].low == 95.0 and tests["rcp"].kind == "min"
    assert tests["sterility"].pending_allowed and not tests["ph"].pending_allowed
    assert all(t.basis for t in fdg.tests)
    assert section.signing.roles_for("released") == ["qa"]
    assert section.dispensing.patient_names is False
    assert (section.dispensing.action_pct, section.dispensing.fail_pct) == (10.0, 20.0)


@pytest.mark.parametrize(("data", "message"), [
    ({"synthesis": [{"device": "s", "product": "nope"}]}, "no product 'nope'"),
    ({"products": [{"id": "x", "name": "X", "nuclide": "F-18", "half_life_min": [1, 2],
                    "half_life_basis": "b", "shelf_life_h": 1, "yield_investigation_pct": [1, 2],
                    "tests": [{"code": "ph", "kind": "range", "low": 9, "high": 1, "basis": "b"}]}]},
     "low 9.0 above high 1.0"),
    ({"products": [{"id": "x", "name": "X", "nuclide": "F-18", "half_life_min": [1, 2],
                    "half_life_basis": "b", "shelf_life_h": 1, "yield_investigation_pct": [1, 2],
                    "tests": [{"code": "rcp", "kind": "min", "basis": "b"}]}]}, "needs low"),
    ({"dispensing": {"action_pct": 30, "fail_pct": 20}}, "action_pct above fail_pct"),
    ({"signing": {"released": ["janitor"]}}, "released"),
])  # fmt: skip
def test_bad_rules_are_refused(data: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RecordsSection.model_validate(data)


def test_check_config_names_the_key_of_an_unknown_device(tmp_path: Path) -> None:
    text = (REPO / "config" / "demo.toml").read_text(encoding="utf-8")
    bad = tmp_path / "demo.toml"
    bad.write_text(text.replace('channel = "particles_0_5um" }', 'channel = "x" }').replace(
        'particles = { device = "hotcell-1"', 'particles = { device = "hotcell-9"'),
        encoding="utf-8")
    (tmp_path / "maps").symlink_to(REPO / "config" / "maps")
    done = subprocess.run(isoedge_cmd("check-config", str(bad)), capture_output=True, text=True,
                          env=cli_env(), check=False, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "records.synthesis[0].environment.particles.device: unknown device 'hotcell-9'" in (
        done.stdout + done.stderr)
