"""`[[agents]] zone`: the site's time zone the fleet page shows an agent's times in."""

from __future__ import annotations

from pathlib import Path

import pytest

from central.config import ConfigError, parse_config
from central.envelope import KeyRegistry
from central.fleet import FleetData


def _agents(**zone: str) -> list[dict]:
    return [{"site": "north", "agent": "edge-n1", "public_keys": [str(Path("k.jwk"))], **zone}]


def test_a_zone_is_an_iana_name_and_utc_by_default() -> None:
    base = {"database": {"url": "postgresql://localhost/x"}}
    assert parse_config({**base, "agents": _agents()}, "t").agents[0].zone == "UTC"
    assert parse_config({**base, "agents": _agents(zone="Asia/Almaty")}, "t").agents[0].zone \
        == "Asia/Almaty"
    with pytest.raises(ConfigError, match=r"agents\[0\]\.zone.*unknown time zone 'Mars/Olympus'"):
        parse_config({**base, "agents": _agents(zone="Mars/Olympus")}, "t")


def test_each_agent_is_shown_in_its_sites_zone() -> None:
    base = {"database": {"url": "postgresql://localhost/x"}}
    data = FleetData(parse_config({**base, "agents": _agents(zone="Asia/Almaty")}, "t"),
                     KeyRegistry([]))
    assert data.zone_of("north", "edge-n1") == "Asia/Almaty"
    assert data.zone_of("north", "other") == "Asia/Almaty"  # the site's zone
    assert data.zone_of("elsewhere") == "UTC"
