"""Every registered driver's folder: README, sample configuration, golden test cases, index.

The driver list comes from the registry (the `isoedge.drivers` entry points), never from a
list in this file: a new driver is covered as soon as its folder and entry point exist.
"""

from __future__ import annotations

import asyncio
import math
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO

from agent.service.config import ConfigError, parse_config
from drivers.base import DeviceError, Sample
from drivers.registry import DriverSpec, create_driver, registry
from simulators.dosecal import DoseCalibratorSimulator

AGENT = {"site": "docs", "id": "example"}
BUILT_IN = [spec for spec in registry().values() if spec.folder.is_relative_to(REPO)]
FOLDERS = sorted({spec.folder for spec in BUILT_IN})


def _pyproject_entry_points() -> dict[str, str]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    group: dict[str, str] = pyproject["project"]["entry-points"]["isoedge.drivers"]
    return group


def test_registry_holds_every_entry_point_of_pyproject():
    declared = _pyproject_entry_points()
    # A stale installation (pyproject.toml edited, `pip install -e .` not rerun) shows here.
    assert {spec.type for spec in BUILT_IN} == set(declared), "run: pip install -e ."
    assert not registry().broken
    for name, ref in declared.items():
        module, _, attribute = ref.partition(":")
        assert registry()[name].folder == REPO / Path(*module.split(".")), (name, ref)
        assert attribute


@pytest.mark.parametrize("spec", BUILT_IN, ids=lambda s: s.type)
def test_folder_has_readme_and_valid_sample(spec: DriverSpec):
    assert spec.readme.is_file(), spec.readme
    assert spec.summary
    data = tomllib.loads(spec.sample_path.read_text(encoding="utf-8"))
    config = parse_config({"agent": AGENT, **data}, str(spec.sample_path))
    assert [device.type for device in config.devices] == [spec.type]
    for device in config.devices:
        assert type(create_driver(device)) is spec.driver_class()


README_BLOCKS = [
    pytest.param(block, id=f"{folder.relative_to(REPO)}#{index}")
    for folder in FOLDERS
    for index, block in enumerate(
        re.findall(r"```toml\n(.*?)```", (folder / "README.md").read_text(), re.DOTALL)
    )
    if "[[devices]]" in block
]


def test_readmes_have_examples():
    assert len(README_BLOCKS) >= 6


@pytest.mark.parametrize("block", README_BLOCKS)
def test_readme_example_is_valid(block):
    data = tomllib.loads(block)
    config = parse_config({"agent": AGENT, **data}, "README example")
    assert config.devices
    for device in config.devices:
        create_driver(device)


def test_instruments_index_has_no_dead_links():
    # The index is documentation, not wiring: a new driver works without a row here, but a
    # moved or renamed README must not leave a dead link behind.
    index_dir = REPO / "docs" / "instruments"
    index = (index_dir / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", index)
    assert targets
    for target in targets:
        assert (index_dir / target).exists(), target


# -- golden test cases: testcases/<case>/config.toml + expected.toml, one generic runner --------

CASES = [
    pytest.param(case, id=str(case.relative_to(REPO / "drivers")))
    for folder in FOLDERS
    if (folder / "testcases").is_dir()
    for case in sorted((folder / "testcases").iterdir())
    if (case / "config.toml").is_file()
]


def test_every_dose_calibrator_has_a_reading_case():
    with_readings = {
        tomllib.loads((case.values[0] / "config.toml").read_text())["devices"][0]["type"]
        for case in CASES
        if "readings" in tomllib.loads((case.values[0] / "expected.toml").read_text())
    }
    assert {spec.type for spec in registry().with_simulator()} <= with_readings


async def _collect(device: Any, channels: set[str]) -> dict[str, Sample]:
    """The first sample of each expected channel."""
    driver = create_driver(device)
    first: dict[str, Sample] = {}
    try:
        async with asyncio.timeout(10):
            await driver.connect()
            async for sample in driver.samples():
                first.setdefault(sample.channel, sample)
                if channels <= set(first):
                    break
    finally:
        await driver.close()
    return first


@pytest.mark.parametrize("case", CASES)
async def test_golden_case(case: Path):
    data = tomllib.loads((case / "config.toml").read_text(encoding="utf-8"))
    expected = tomllib.loads((case / "expected.toml").read_text(encoding="utf-8"))
    sim_options = data.pop("simulator", None)
    if "config_error" in expected:
        with pytest.raises(ConfigError) as error:
            parse_config({"agent": AGENT, **data}, "case")
        problems = [(p.key, p.message) for p in error.value.problems]
        assert any(
            expected["config_error"] in message and key == expected.get("key", key)
            for key, message in problems
        ), problems
        return
    simulator = None
    if sim_options is not None:
        device = data["devices"][0]
        options = {"background_mbq": 0.0, "noise": False, "time_scale": 0.0, "seed": 1}
        simulator = DoseCalibratorSimulator(device["type"], "pty", **{**options, **sim_options})
        device["port"] = await simulator.start()
    try:
        config = parse_config({"agent": AGENT, **data}, "case")
        device = config.devices[0]
        if "connect_error" in expected:
            driver = create_driver(device)
            with pytest.raises(DeviceError, match=re.escape(expected["connect_error"])):
                await driver.connect()
            await driver.close()
            return
        wanted = expected["readings"]
        samples = await _collect(device, {r["channel"] for r in wanted})
    finally:
        if simulator is not None:
            await simulator.stop()
    for reading in wanted:
        sample = samples[reading["channel"]]
        assert sample.quality.value == reading.get("quality", "good"), sample
        assert isinstance(sample.value, float | int), sample
        assert math.isclose(sample.value, reading["value"], rel_tol=reading.get("rel", 1e-6)), (
            sample
        )
        for key in ("unit", "nuclide", "raw_text"):
            if key in reading:
                assert getattr(sample, key) == reading[key], (key, sample)
