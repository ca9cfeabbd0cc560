"""The console's seam on the live state: snapshots that do not move, subscriptions that end."""

from __future__ import annotations

from datetime import UTC, datetime

from agent.acquisition.state import LiveState
from agent.core.reading import Reading


def reading(value: float) -> Reading:
    return Reading(device="dc1", channel="activity", value=value, unit="MBq",
                   t=datetime.now(UTC), quality="good", raw_value=value, raw_unit="MBq")


def test_subscribe_returns_its_remover_and_snapshots_are_copies():
    live = LiveState()
    seen: list[tuple[str, float]] = []
    remove = live.subscribe(lambda kind, item: seen.append((kind, item["value"])))
    live.on_reading(reading(1.0), {"device": "dc1", "channel": "activity", "value": 1.0})
    before = live.snapshot()
    remove()
    remove()  # idempotent
    live.on_reading(reading(2.0), {"device": "dc1", "channel": "activity", "value": 2.0})
    assert seen == [("reading", 1.0)]
    assert before.latest[("dc1", "activity")]["value"] == 1.0
    assert before.device("dc1").readings == 1
    assert live.snapshot().device("dc1").readings == 2
    assert live.snapshot().latest[("dc1", "activity")]["value"] == 2.0
    assert before.device("unknown").readings == 0
    assert not live.listeners
