"""The console's seam on the live state: snapshots that do not move, subscriptions that end."""

from __future__ import annotations

from agent.acquisition.state import LiveState


def one_reading(live: LiveState, value: float) -> None:
    """A batch of one activity reading of device dc1, as the pipeline hands it over."""
    live.on_batch(
        "dc1", ["activity"], [value], [{"device": "dc1", "channel": "activity", "value": value}]
    )


def test_subscribe_returns_its_remover_and_snapshots_are_copies():
    live = LiveState()
    seen: list[tuple[str, float]] = []
    remove = live.subscribe(lambda kind, item: seen.append((kind, item["value"])))
    one_reading(live, 1.0)
    before = live.snapshot()
    remove()
    remove()  # idempotent
    one_reading(live, 2.0)
    assert seen == [("reading", 1.0)]
    assert before.latest[("dc1", "activity")]["value"] == 1.0
    assert before.device("dc1").readings == 1
    assert live.snapshot().device("dc1").readings == 2
    assert live.snapshot().latest[("dc1", "activity")]["value"] == 2.0
    assert before.device("unknown").readings == 0
    assert not live.listeners
