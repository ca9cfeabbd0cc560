"""The one list of device states: supervisor, QC rules, status topic, /healthz and /metrics."""

from __future__ import annotations

import enum


class DeviceState(enum.StrEnum):
    """A device's state as the agent sees it (published in the retained status)."""

    STARTING = "starting"
    CONNECTING = "connecting"
    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"
    PAUSED = "paused"
    STOPPED = "stopped"


LINK_STATES = frozenset(
    {DeviceState.CONNECTING, DeviceState.ONLINE, DeviceState.DEGRADED, DeviceState.OFFLINE}
)
"""States that describe the device's link (what QC's `offline` rule and the audit follow)."""

HEALTHY_STATES = frozenset({DeviceState.ONLINE, DeviceState.DEGRADED})
"""States in which a device counts as acquiring for /healthz."""
