"""Every TOML example in docs/instruments/ is a valid device configuration."""

from __future__ import annotations

import re
import tomllib

import pytest
from helpers import REPO

from agent.service.config import parse_config
from drivers.catalog import create_driver

DOCS = sorted((REPO / "docs" / "instruments").glob("*.md"))
BLOCKS = [
    pytest.param(block, id=f"{path.name}#{index}")
    for path in DOCS
    for index, block in enumerate(re.findall(r"```toml\n(.*?)```", path.read_text(), re.DOTALL))
]


def test_every_instrument_has_a_page():
    names = {path.name for path in DOCS}
    assert {
        "capintec-crc15.md", "atomlab500.md", "vdc404.md", "vik202.md", "serial-line.md"
    } <= names
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("block", BLOCKS)
def test_example_is_valid(block):
    data = tomllib.loads(block)
    data["agent"] = {"site": "docs", "id": "example"}
    config = parse_config(data, "docs example")
    assert config.devices
    for device in config.devices:
        create_driver(device)
