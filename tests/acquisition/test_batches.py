"""A batch from every driver family reaches the broker whole: dose calibrator on a serial pty,
Modbus TCP and RTU, OPC UA, synthetic. Runs `isoedge demo` (every simulator, the real agent)
with one synthetic device added, against a private mosquitto, and checks every item."""

from __future__ import annotations

import json
import math
import re
import subprocess
import tomllib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from collector import Collector, assert_gapless_chain, decode_all
from helpers import REPO, cli_env, free_port, isoedge_cmd, wait_until

REQUIRED = {"id", "device", "channel", "t", "value", "unit", "quality", "raw"}
SYNTHETIC = """
[[devices]]
id = "synthetic-1"
type = "synthetic"
channels = ["a", "b", "c"]
mode = "counter"
rate_per_s = 600
unit = "uSv/h"
"""


def modbus_channels(config: dict[str, Any], device: str) -> set[str]:
    for entry in config["devices"]:
        if entry["id"] == device:
            return {p["channel"] for p in entry.get("points", [])}
    raise KeyError(device)


def assert_item_intact(item: dict[str, Any]) -> None:
    assert set(item) >= REQUIRED, item
    assert item["quality"] in {"good", "uncertain", "bad"}, item
    assert {"value", "unit"} <= set(item["raw"]), item
    assert item["t"].endswith("Z") and len(item["t"]) == len("2026-01-01T00:00:00.000000Z")
    if item["quality"] == "bad":
        assert item["value"] is None and item["reason"], item
    if isinstance(item["value"], float):
        assert math.isfinite(item["value"]), item


DEVICES = ("dosecal-1", "hotcell-1", "area-monitor-1", "area-monitor-2", "synthesis-1",
           "synthetic-1")  # fmt: skip
Envelopes = dict[str, list[list[dict[str, Any]]]]


def run_demo(tmp_path: Path, mosquitto: Any, config_path: Path) -> list[Any]:
    """`isoedge demo` until every device has published three envelopes; what was received."""
    collector = Collector(mosquitto.port).start()
    demo = subprocess.Popen(
        isoedge_cmd("demo", "--config", str(config_path), "--broker", mosquitto.url,
                    "--state-dir", str(tmp_path / "demo"), "--web", f"127.0.0.1:{free_port()}",
                    "--plain"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=cli_env(),
    )  # fmt: skip

    def every_device_delivered_thrice() -> bool:
        seen = Counter(m.topic.rsplit("/", 1)[-1] for m in collector.envelopes()
                       if "/readings/" in m.topic)  # fmt: skip
        return all(seen[d] >= 3 for d in DEVICES)

    try:
        wait_until(every_device_delivered_thrice, timeout=60)
    finally:
        demo.terminate()
        try:
            output, _ = demo.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            demo.kill()
            output, _ = demo.communicate(timeout=10)
            raise AssertionError(output.decode(errors="replace")[-3000:]) from None
        finally:
            collector.stop()
    assert demo.returncode == 0, output.decode(errors="replace")[-3000:]
    return collector.envelopes()


def readings_by_device(decoded: list[tuple[str, dict[str, Any], bytes]]) -> Envelopes:
    """Each device's envelopes' items; every item checked on the way."""
    by_device: Envelopes = defaultdict(list)
    ids: set[str] = set()
    for topic, document, _payload in decoded:
        if document["stream"] != "readings":
            continue
        device = topic.rsplit("/", 1)[-1]
        for item in document["items"]:
            assert item["device"] == device, (topic, item)
            assert_item_intact(item)
            assert item["id"] not in ids, "item ids are unique"
            ids.add(item["id"])
        by_device[device].append(document["items"])
    return by_device


def check_modbus(by_device: Envelopes, config: dict[str, Any]) -> None:
    """Every envelope holds whole polls, each with every point of the map exactly once, its
    raw text the registers as read."""
    for device in ("hotcell-1", "area-monitor-1", "area-monitor-2"):
        # Maps not in the file come from the simulator profile: the first poll tells.
        channels = modbus_channels(config, device) or {i["channel"] for i in
                                                       by_device[device][0]}  # fmt: skip
        for items in by_device[device]:
            assert len(items) % len(channels) == 0, (device, len(items))
            for start in range(0, len(items), len(channels)):
                poll = items[start : start + len(channels)]
                assert {i["channel"] for i in poll} == channels, (device, poll)
                for item in poll:
                    assert re.fullmatch(r"(hr|ir|co|di) \d+: [0-9A-F ]+", item["raw"]["text"])
                    assert item["quality"] == "good", item


def check_dosecal(by_device: Envelopes) -> None:
    """Capintec on a pty: the instrument's line kept, nuclide, decay-corrected to 12:00."""
    activities = [i for items in by_device["dosecal-1"] for i in items
                  if i["channel"] == "activity" and i["quality"] == "good"]  # fmt: skip
    assert activities
    for item in activities:
        assert item["unit"] == "MBq" and item["raw"]["text"], item
        # (a background measurement of the daily QC reads about zero, even a hair below)
        assert item["nuclide"] and item["ref_time"], item
        assert isinstance(item["value_at_ref"], float), item


def check_opcua(by_device: Envelopes) -> None:
    """Notification bursts: every node's value with its raw rendering and status."""
    values = [i for items in by_device["synthesis-1"] for i in items if "kind" not in i]
    assert values
    for item in values:
        assert re.fullmatch(r"ns=\d+;.+ = .+ \[\w+\]", item["raw"]["text"]), item


def check_synthetic(by_device: Envelopes) -> None:
    """Ticks of several values; counters 1, 2, 3 ... per channel, none lost."""
    counters: dict[str, list[float]] = defaultdict(list)
    for items in by_device["synthetic-1"]:
        assert len(items) > 1, "a tick's values travel together"
        for item in items:
            assert item["raw"]["text"] == f"{item['value']:.6f}", item
            counters[item["channel"]].append(item["value"])
    assert set(counters) == {"a", "b", "c"}
    for values in counters.values():
        assert values == [float(v) for v in range(1, len(values) + 1)]


def test_a_batch_from_each_driver_family_reaches_the_broker_intact(tmp_path: Path, mosquitto):
    config_path = tmp_path / "demo.toml"
    config_path.write_text((REPO / "config" / "demo.toml").read_text() + SYNTHETIC)
    received = run_demo(tmp_path, mosquitto, config_path)
    jwk = json.loads((tmp_path / "demo" / "keys" / "signing.pub.jwk").read_text())
    decoded = decode_all(received, jwk)
    assert_gapless_chain(decoded)
    by_device = readings_by_device(decoded)
    assert set(DEVICES) <= set(by_device)
    check_modbus(by_device, tomllib.loads(config_path.read_text()))
    check_dosecal(by_device)
    check_opcua(by_device)
    check_synthetic(by_device)
