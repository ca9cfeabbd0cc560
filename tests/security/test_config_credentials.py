"""`isoedge check-config` refuses placeholder or weak credentials, naming file and user."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import REPO, cli_env, isoedge_cmd

from agent.console.auth import hash_password
from agent.service.config import ConfigError, load_config

EXAMPLE = REPO / "config" / "example-site.toml"


def _with_user(tmp_path: Path, user_lines: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(
        '[agent]\nsite = "lab"\nid = "edge1"\n\n[[web.users]]\nname = "qa-officer"\n'
        f'role = "qa"\n{user_lines}\n'
    )
    return path


def _check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(isoedge_cmd("check-config", str(path)), capture_output=True,
                          text=True, env=cli_env(), timeout=60, check=False)


def test_check_config_exits_2_on_the_placeholder_hash_naming_file_and_user(tmp_path):
    path = _with_user(tmp_path, 'password_hash = "scrypt$16384$8$1$REPLACE$ME"')
    done = _check_config(path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert str(path) in done.stderr
    assert "'qa-officer'" in done.stderr
    assert "32-byte digest" in done.stderr
    assert "salt of at least 16 bytes" in done.stderr


@pytest.mark.parametrize(
    "line",
    [
        'password_hash = "notahash"',
        'password_hash = "scrypt$1024$8$1$c3NzcwAAAAAAAAAAAAAAAA$' + "A" * 43 + '"',
        'token_sha256 = "' + "0" * 64 + '"',
        'token_sha256 = "abc"',
    ],
)
def test_config_model_refuses_unusable_credentials(tmp_path, line):
    with pytest.raises(ConfigError, match="qa-officer"):
        load_config(_with_user(tmp_path, line))


def test_a_real_hash_passes(tmp_path):
    config = load_config(_with_user(tmp_path, f'password_hash = "{hash_password("pw-12345678")}"'))
    assert config.web.users[0].password_hash is not None


def test_example_site_ships_no_usable_user():
    config = load_config(EXAMPLE)
    assert config.web.users, "the example still documents its users"
    for user in config.web.users:
        assert user.password_hash is None
        assert user.token_sha256 is None


def test_install_sh_refuses_a_configuration_with_placeholders(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    config = tmp_path / "site.toml"
    shutil.copy(EXAMPLE, config)
    text = config.read_text().replace(
        '# password_hash = "scrypt$16384$8$1$<salt>$<digest>"',
        'password_hash = "scrypt$16384$8$1$REPLACE$ME"',
    )
    assert "REPLACE" in text
    config.write_text(text)
    done = subprocess.run(
        ["bash", str(REPO / "systemd" / "install.sh"), "--root", str(root), "--config",
         str(config)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "placeholder credentials" in done.stderr
    assert not (root / "opt").exists()  # refused before anything was installed
