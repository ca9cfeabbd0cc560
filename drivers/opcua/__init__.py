"""OPC UA: subscriptions, batch events and security (Basic256Sha256), with asyncua.

Configuration models import only pydantic; the driver (and asyncua, which is large) loads on
first use, so an agent without OPC UA devices does not pay for it.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from drivers.opcua.config import OpcUaConfig, OpcUaEvents, OpcUaNode, OpcUaSecurity
from drivers.registry import DriverSpec

DRIVER = DriverSpec(
    type="opcua",
    config=OpcUaConfig,
    driver="drivers.opcua.driver:OpcUaDriver",
    folder=Path(__file__).parent,
    summary="OPC UA: synthesis modules (subscriptions, batch events, Basic256Sha256)",
)

_LAZY = {"OpcUaDriver", "quality_of"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module("drivers.opcua.driver"), name)
    raise AttributeError(name)


__all__ = [
    "DRIVER",
    "OpcUaConfig",
    "OpcUaDriver",
    "OpcUaEvents",
    "OpcUaNode",
    "OpcUaSecurity",
    "quality_of",
]
