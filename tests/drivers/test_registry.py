"""The driver registry: built-in drivers and a driver shipped as its own pip package.

The package test builds a one-file driver package with an `isoedge.drivers` entry point, pip
installs it into a temporary virtual environment layered on this test environment (so the test
environment itself never changes), and runs that environment's `isoedge` on a configuration.
"""

from __future__ import annotations

import json
import os
import re
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import REPO, cli_env, isoedge_cmd

from drivers.registry import registry

pytestmark = pytest.mark.timeout(300)

# The tests that need the plugin venv (a pip install) run on one xdist worker, so it is built
# once per run, not once per worker (`make test` runs with --dist loadgroup). The fixture is
# session-scoped: a worker may run other modules' tests between the group's, which would tear
# a module-scoped one down and build it again.
uses_plugin_venv = pytest.mark.xdist_group("plugin_venv")

PLUGIN_MODULE = '''
"""ACME DC-1: a dose calibrator pushing `<nuclide> <value> <unit>` lines (test package)."""

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

from drivers.base import Sample
from drivers.dosecal.common import SerialDeviceConfig, SerialDoseCalibratorDriver, parse_with_pattern
from drivers.dosecal.simulation import SimulationProfile, significant
from drivers.registry import DriverSpec

LINE = re.compile(r"^(?P<nuclide>\\S+) (?P<value>\\S+) (?P<unit>\\S+)$")


class AcmeConfig(SerialDeviceConfig):
    type: Literal["acme_dc1"]


class AcmeDriver(SerialDoseCalibratorDriver):
    type = "acme_dc1"

    def samples(self) -> AsyncIterator[Sample]:
        return self.push_loop(lambda line: parse_with_pattern(line, LINE), None, 128)


class AcmeSimulation(SimulationProfile):
    pushes = True

    def push_lines(self):
        sim = self.instrument
        line = f"{sim.nuclide()} {significant(sim.displayed())} {sim.unit}\\r\\n"
        return [(line.encode("ascii"), True)]


DRIVER = DriverSpec(
    type="acme_dc1",
    config=AcmeConfig,
    driver=AcmeDriver,
    folder=Path(__file__).parent,
    summary="ACME DC-1 (test package)",
    simulator=AcmeSimulation,
)
'''

PLUGIN_PYPROJECT = """
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "isoedge-driver-acme"
version = "0.1.0"

[tool.setuptools]
py-modules = ["isoedge_acme"]

[project.entry-points."isoedge.drivers"]
acme_dc1 = "isoedge_acme:DRIVER"
# A broken declaration (its module is missing) and an attempt to take over a built-in type.
acme_broken = "isoedge_acme_missing:DRIVER"
opcua = "isoedge_acme:DRIVER"
"""

CONFIG = """
[agent]
site = "lab"
id = "edge"

[[devices]]
id = "acme-1"
type = "{type}"
port = "/dev/ttyUSB0"
"""


def _run(*argv: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, env=env, cwd=cwd, timeout=240
    )


@pytest.fixture(scope="session")
def plugin_venv(tmp_path_factory) -> Path:
    """A venv seeing this test environment's packages, plus the ACME driver package."""
    root = tmp_path_factory.mktemp("plugin")
    package = root / "isoedge-driver-acme"
    package.mkdir()
    (package / "pyproject.toml").write_text(PLUGIN_PYPROJECT, encoding="utf-8")
    (package / "isoedge_acme.py").write_text(PLUGIN_MODULE, encoding="utf-8")
    venv = root / "venv"
    created = _run(sys.executable, "-m", "venv", "--without-pip", venv)
    assert created.returncode == 0, created.stderr
    # `--system-site-packages` would expose the base interpreter's packages, not this test
    # venv's: a .pth line adds this venv's site-packages (its own .pth files included).
    # The package is built the way the project is (setuptools from pip's configured index).
    (purelib,) = (venv / "lib").glob("python3*/site-packages")
    layered = "; ".join(f"site.addsitedir({p!r})" for p in site.getsitepackages())
    (purelib / "isoedge-test-base.pth").write_text(f"import site; {layered}\n", encoding="utf-8")
    installed = _run(
        sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install",
        "--no-deps", "--quiet", package,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv


def _venv_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["COLUMNS"] = "200"
    return env


def _isoedge(venv: Path, *args: str | Path, cwd: Path):
    return _run(venv / "bin" / "python", "-m", "agent", *args, env=_venv_env(), cwd=cwd)


@uses_plugin_venv
def test_a_driver_package_is_discovered_by_check_config(plugin_venv, tmp_path):
    good = tmp_path / "acme.toml"
    good.write_text(CONFIG.format(type="acme_dc1"), encoding="utf-8")
    result = _isoedge(plugin_venv, "check-config", good, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "acme-1" in result.stdout
    assert "acme_dc1" in result.stdout

    typo = tmp_path / "typo.toml"
    typo.write_text(CONFIG.format(type="acme_dc2"), encoding="utf-8")
    result = _isoedge(plugin_venv, "check-config", typo, cwd=tmp_path)
    assert result.returncode == 2
    message = result.stderr
    assert "devices[0].type: unknown driver type 'acme_dc2' (did you mean 'acme_dc1'?)" in message
    for known in ["acme_dc1", *registry()]:
        assert f"'{known}'" in message, message


@uses_plugin_venv
def test_a_broken_package_is_named_and_cannot_replace_a_built_in(plugin_venv, tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text(CONFIG.format(type="acme_broken"), encoding="utf-8")
    result = _isoedge(plugin_venv, "check-config", broken, cwd=tmp_path)
    assert result.returncode == 2
    assert (
        "devices[0].type: driver 'acme_broken' (isoedge_acme_missing:DRIVER) failed to load: "
        "ModuleNotFoundError"
    ) in result.stderr

    # `opcua` stays the built-in driver: its keys are required, the package's are not.
    opcua = tmp_path / "opcua.toml"
    opcua.write_text(CONFIG.format(type="opcua"), encoding="utf-8")
    result = _isoedge(plugin_venv, "check-config", opcua, cwd=tmp_path)
    assert result.returncode == 2
    assert "devices[0].url: required key is missing" in result.stderr

    # Nothing is logged at load: `--json` output stays one JSON document.
    good = tmp_path / "acme.toml"
    good.write_text(CONFIG.format(type="acme_dc1"), encoding="utf-8")
    result = _isoedge(plugin_venv, "check-config", "--json", good, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["devices"][0]["type"] == "acme_dc1"


@uses_plugin_venv
def test_the_simulator_lists_a_driver_package_model(plugin_venv, tmp_path):
    result = _isoedge(plugin_venv, "simulate", "dosecal", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\s+acme_dc1\s+ACME DC-1", result.stdout, re.MULTILINE), result.stdout


def test_the_test_environment_does_not_see_the_package():
    assert "acme_dc1" not in registry()
    result = subprocess.run(
        isoedge_cmd("simulate", "dosecal", "--help"),
        capture_output=True, text=True, env={**cli_env(), "COLUMNS": "200"}, timeout=60,
    )
    assert "acme_dc1" not in result.stdout


def test_simulate_dosecal_help_lists_every_built_in_model():
    result = subprocess.run(
        isoedge_cmd("simulate", "dosecal", "--help"),
        capture_output=True, text=True, env={**cli_env(), "COLUMNS": "200"}, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    built_in = {"capintec_crc15", "atomlab500", "vdc404", "vik202", "serial_line"}
    listed = set(re.findall(r"^  ([a-z0-9_]+)  ", result.stdout, re.MULTILINE))
    assert built_in <= listed, result.stdout
    assert listed == {spec.type for spec in registry().with_simulator()}
    # Every model also is a configuration type: the same names everywhere.
    assert listed <= set(registry())


def test_built_in_models_are_the_driver_folders_with_a_simulator_profile():
    folders = {p.parent.name for p in (REPO / "drivers").rglob("simulator.py")}
    assert folders == {spec.type for spec in registry().with_simulator()}


def test_driver_classes_load_on_first_use():
    # Listing the registry and building the configuration union must not import the
    # protocol libraries: an agent without OPC UA or Modbus devices does not carry them.
    code = textwrap.dedent(
        """
        import sys
        import agent.service.config
        from drivers.registry import registry
        assert len(registry()) >= 9
        print(sorted(m for m in ("asyncua", "pymodbus") if m in sys.modules))
        registry()["opcua"].driver_class()
        print("asyncua" in sys.modules)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[]", "True"]
