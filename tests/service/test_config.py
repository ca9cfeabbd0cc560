"""`isoedge check-config`: valid files summarised, broken ones rejected with exit 2 and the key."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import REPO, cli_env, isoedge_cmd

from agent.service.config import ConfigError, load_config

BASE = """
[agent]
site = "lab1"
id = "edge1"

[[devices]]
id = "area-1"
type = "synthetic"
poll_interval_s = 1
"""


def check(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(isoedge_cmd("check-config", str(path), *extra), capture_output=True,
                          text=True, env=cli_env(), timeout=60)


def test_valid_config_prints_a_summary(tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text(BASE)
    result = check(path)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert "area-1" in result.stdout
    assert "synthetic" in result.stdout
    summary = json.loads(check(path, "--json").stdout)
    assert summary["devices"][0]["id"] == "area-1"
    assert summary["broker"] == "mqtt://127.0.0.1:1883"


@pytest.mark.parametrize(
    ("name", "text", "key", "expected"),
    [
        ("bad type", BASE.replace("poll_interval_s = 1", 'poll_interval_s = "fast"'),
         "devices[0].poll_interval_s", "valid number"),
        ("unknown driver", BASE.replace('type = "synthetic"', 'type = "teleporter"'),
         "devices[0].type", "unknown driver type 'teleporter'"),
        ("missing key", BASE.replace('site = "lab1"\n', ""), "agent.site", "required key is missing"),
        ("duplicate id", BASE + BASE.split("\n", 5)[-1], "devices[1].id",
         "duplicate device id 'area-1'"),
        ("unknown key", BASE.replace("poll_interval_s = 1", "poll_intervall_s = 1"),
         "devices[0].poll_intervall_s", "unknown key"),
    ],
)
def test_broken_config_exits_2_naming_file_and_key(tmp_path, name, text, key, expected):
    path = tmp_path / "broken.toml"
    path.write_text(text)
    result = check(path)
    assert result.returncode == 2, (name, result.stdout, result.stderr)
    assert f"{path}: {key}: " in result.stderr
    assert expected in result.stderr


def test_unreadable_file_exits_2(tmp_path):
    missing = tmp_path / "nope.toml"
    result = check(missing)
    assert result.returncode == 2
    assert str(missing) in result.stderr
    assert "cannot read" in result.stderr


def test_invalid_toml_names_the_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[agent\nsite = 1\n")
    result = check(path)
    assert result.returncode == 2
    assert "invalid TOML" in result.stderr
    assert "line 1" in result.stderr


def test_every_error_is_reported_not_just_the_first(tmp_path):
    path = tmp_path / "many.toml"
    path.write_text(BASE.replace('site = "lab1"', 'site = "bad site!"').replace(
        "poll_interval_s = 1", "poll_interval_s = -1"))
    result = check(path)
    assert result.returncode == 2
    assert "agent.site" in result.stderr
    assert "devices[0].poll_interval_s" in result.stderr
    assert "2 error(s)" in result.stderr


def test_run_with_invalid_config_starts_nothing_and_exits_2(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text(BASE.replace('type = "synthetic"', 'type = "teleporter"'))
    result = subprocess.run(isoedge_cmd("run", "-c", str(path)), capture_output=True, text=True,
                            env=cli_env(), timeout=60)
    assert result.returncode == 2
    assert "devices[0].type" in result.stderr
    assert not (tmp_path / "state").exists()


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    path = tmp_path / "sub" / "agent.toml"
    path.parent.mkdir()
    path.write_text(BASE + '\n[signing]\nkey_file = "keys/signing.key"\n')
    config = load_config(path)
    assert config.signing.key_file == path.parent / "keys/signing.key"
    assert config.agent.state_dir == Path("/var/lib/isoedge")


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "config").glob("*.toml")))
def test_shipped_configs_are_valid(name):
    try:
        load_config(REPO / "config" / name)
    except ConfigError as exc:  # pragma: no cover - the message is the point
        pytest.fail(str(exc))
