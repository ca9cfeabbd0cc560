"""The systemd unit passes `systemd-analyze verify` and scores "OK" or better on `security`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import REPO

UNIT = REPO / "systemd" / "isoedge.service"
SECURITY_THRESHOLD = 20  # exposure in tenths: 2.0; "OK" is anything below 5.0
GOOD_LABELS = {"OK", "SAFE", "PERFECT"}


def ensure_systemd_analyze() -> str:
    """Path of systemd-analyze; installs Debian's systemd package when missing and root."""
    found = shutil.which("systemd-analyze")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.fail("systemd-analyze is missing: install it with 'sudo apt-get install systemd'")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "systemd"],
        check=True, env=env, capture_output=True,
    )
    found = shutil.which("systemd-analyze")
    assert found, "installing systemd did not provide systemd-analyze"
    return found


def unit_for_verify(unit_text: str, root: Path, prefix: str = "/opt/isoedge") -> str:
    """The unit with its program paths pointing into `root` (verify checks ExecStart exists)."""
    return unit_text.replace(f"{prefix}/", f"{root}{prefix}/")


def verify(analyze: str, unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, check=False)


def security(analyze: str, unit: Path) -> tuple[subprocess.CompletedProcess[str], float, str]:
    """Run the offline security review; return the result, the exposure and its label."""
    result = subprocess.run(
        [analyze, "security", "--offline=true", f"--threshold={SECURITY_THRESHOLD}", str(unit)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d) (\w+)", result.stdout)
    assert match, result.stdout + result.stderr
    return result, float(match.group(1)), match.group(2)


@pytest.fixture(scope="module")
def analyze() -> str:
    return ensure_systemd_analyze()


@pytest.fixture
def fake_program(tmp_path) -> Path:
    program = tmp_path / "opt" / "isoedge" / "venv" / "bin" / "isoedge"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    return program


def test_unit_verifies_cleanly(analyze, tmp_path, fake_program):
    unit = tmp_path / "isoedge.service"
    unit.write_text(unit_for_verify(UNIT.read_text(), tmp_path))
    result = verify(analyze, unit)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", f"warnings: {result.stderr}"


def test_verify_would_catch_a_broken_unit(analyze, tmp_path, fake_program):
    """Control: the check above is able to fail (a typo and a missing program)."""
    unit = tmp_path / "isoedge.service"
    unit.write_text(unit_for_verify(UNIT.read_text(), tmp_path).replace(
        "NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    assert "Unknown key" in verify(analyze, unit).stderr
    unit.write_text(UNIT.read_text().replace("/opt/isoedge/venv", str(tmp_path / "missing")))
    assert verify(analyze, unit).returncode != 0


def test_security_exposure_is_ok_or_better(analyze):
    result, exposure, label = security(analyze, UNIT)
    assert result.returncode == 0, result.stdout[-400:]
    assert label in GOOD_LABELS, f"exposure {exposure} {label}"
    assert exposure <= SECURITY_THRESHOLD / 10


def test_security_checks_we_rely_on_are_satisfied(analyze):
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--json=short", str(UNIT)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    checks = {c["name"]: c["set"] for c in json.loads(result.stdout)}
    for name in (
        "ProtectSystem=", "ProtectHome=", "PrivateTmp=", "NoNewPrivileges=",
        "User=/DynamicUser=", "CapabilityBoundingSet=~CAP_SYS_ADMIN", "ProtectClock=",
        "SystemCallFilter=~@privileged", "SystemCallFilter=~@mount", "MemoryDenyWriteExecute=",
        "RestrictAddressFamilies=~AF_PACKET", "RestrictAddressFamilies=~AF_NETLINK",
        "RestrictNamespaces=~user", "ProtectKernelModules=", "RestrictSUIDSGID=",
    ):
        assert checks.get(name) is True, name


def test_security_would_flag_a_weak_unit(analyze, tmp_path):
    """Control: an unhardened unit running as root is scored far worse."""
    unit = tmp_path / "weak.service"
    unit.write_text("[Service]\nExecStart=/bin/true\n")
    _result, exposure, label = security(analyze, unit)
    assert exposure > 5.0
    assert label not in GOOD_LABELS


def test_unit_contract():
    text = UNIT.read_text()
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    assert settings["Type"] == ["notify"]
    assert settings["ExecStart"] == [
        "/opt/isoedge/venv/bin/isoedge run -c /etc/isoedge/isoedge.toml"
    ]
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert settings["Restart"] == ["on-failure"]
    assert settings["RestartPreventExitStatus"] == ["2"]
    assert settings["User"] == ["isoedge"]
    assert settings["SupplementaryGroups"] == ["dialout"]
    assert settings["StateDirectory"] == ["isoedge"]
    assert settings["ConfigurationDirectory"] == ["isoedge"]
    assert settings["CapabilityBoundingSet"] == [""]
    assert settings["DevicePolicy"] == ["closed"]
    assert settings["DeviceAllow"] == ["char-ttyS rw", "char-ttyUSB rw", "char-ttyACM rw"]
    assert settings["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert settings["SystemCallFilter"][0] == "@system-service"
    assert "WatchdogSec" in settings
    assert "TimeoutStopSec" in settings
