"""Relative paths in a configuration are relative to the file: one generic walk for every field."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel

from agent.core.paths import KeepRelative, resolve_relative_paths
from agent.service.config import load_config


class _Inner(BaseModel):
    file: Path | None = None
    files: list[Path] = []


class _Outer(BaseModel):
    one: Path
    absolute: Path
    keep: Annotated[Path, KeepRelative()]
    inner: _Inner
    by_name: dict[str, _Inner] = {}
    text: str = "not/a/path"


def test_every_path_field_at_any_depth_is_resolved(tmp_path):
    model = _Outer(
        one="a.pem",
        absolute="/etc/isoedge/b.pem",
        keep="outbox.db",
        inner={"file": "c.der", "files": ["d.jwk", "/abs/e.jwk"]},
        by_name={"x": {"file": "f.key"}},
    )
    resolved = resolve_relative_paths(model, tmp_path)
    assert resolved.one == tmp_path / "a.pem"
    assert resolved.absolute == Path("/etc/isoedge/b.pem")
    assert resolved.keep == Path("outbox.db")
    assert resolved.inner.file == tmp_path / "c.der"
    assert resolved.inner.files == [tmp_path / "d.jwk", Path("/abs/e.jwk")]
    assert resolved.by_name["x"].file == tmp_path / "f.key"
    assert resolved.text == "not/a/path"
    assert model.one == Path("a.pem")  # the original is left as it was


def test_config_sections_resolve_against_the_file_not_the_cwd(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    config_file = site / "isoedge.toml"
    config_file.write_text(
        """
[agent]
site = "s"
id = "a"
state_dir = "state"

[signing]
key_file = "keys/signing.key"
previous_public_keys = ["keys/old.pub.jwk"]

[broker]
url = "mqtts://127.0.0.1:8883"
password_file = "keys/broker.password"
username = "agent"
tls = { ca_file = "keys/ca.pem" }

[outbox]
path = "outbox.db"
""",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    config = load_config("site/isoedge.toml")
    base = Path("site")
    assert config.agent.state_dir == base / "state"
    assert config.signing.key_file == base / "keys/signing.key"
    assert config.signing.previous_public_keys == [base / "keys/old.pub.jwk"]
    assert config.broker.password_file == base / "keys/broker.password"
    assert config.broker.tls is not None
    assert config.broker.tls.ca_file == base / "keys/ca.pem"
    # The outbox database is relative to the state directory, as documented.
    assert config.outbox.path == Path("outbox.db")
    assert config.outbox_path == base / "state" / "outbox.db"
