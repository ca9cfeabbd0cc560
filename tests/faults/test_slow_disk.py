"""A slow disk (issue 14): every fsync takes 300 ms longer, like a worn SD card.

The state directory is on a cutfs with `--fsync-delay-ms 300`. Polls keep their interval
within 10 %, the web console answers within a second while alerts are raised and cleared
several times a second, and memory stays bounded (the outbox holds acquisition back).
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from agentproc import AgentProcess, make_keys
from collector import Collector, decode_all
from faults.cutfs import CutFS, fuse_available
from faults.scenario import events, fault_config, finish, http_get, metrics
from helpers import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

POLL_S = 0.2
DEVICES = f"""
[[devices]]
id = "steady"
type = "synthetic"
mode = "counter"
channels = ["a"]
poll_interval_s = {POLL_S}

[[devices]]
id = "noisy"
type = "synthetic"
channels = ["x"]
base = 1.0
amplitude = 0.0
poll_interval_s = 0.05

[[devices]]
id = "fast"
type = "synthetic"
channels = ["a", "b", "c", "d"]
rate_per_s = 2000

[[rules]]
name = "noisy-high"
type = "threshold"
device = "noisy"
channel = "x"
high = 1.0
hysteresis = 0.001
severity = "warning"
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Probe(threading.Thread):
    """Asks the console for /healthz every 0.2 s (keeping its latency) and samples the RSS."""

    def __init__(self, port: int, agent: AgentProcess) -> None:
        super().__init__(name="console-probe", daemon=True)
        self.port = port
        self.agent = agent
        self.latencies: list[float] = []
        self.rss: list[int] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            started = time.monotonic()
            status, _body = http_get(self.port, "/healthz", timeout=5)
            if status:
                self.latencies.append(time.monotonic() - started)
            if self.agent.proc is not None:
                self.rss.append(rss_kib(self.agent.proc.pid))
            self._stop_event.wait(0.2)

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(10)


def poll_gaps(decoded, device: str) -> list[float]:
    """Intervals between a device's readings (measurement times), after a warm-up."""
    times = sorted(datetime.fromisoformat(i["t"]).timestamp()
                   for _t, d, _p in decoded if d["stream"] == "readings"
                   for i in d["items"] if i["device"] == device)[5:]
    return [b - a for a, b in itertools.pairwise(times)]


def test_a_slow_disk_keeps_polls_on_time_the_console_responsive_and_memory_bounded(
    tmp_path, mosquitto, teardown
):
    reason = fuse_available()
    if reason is not None:
        pytest.skip(reason)
    jwk = make_keys(tmp_path / "keys")
    collector = Collector(mosquitto.port).start()
    teardown.callback(collector.stop)
    config, port = fault_config(tmp_path, mosquitto.url, DEVICES)
    fs = CutFS(tmp_path / "backing", tmp_path / "state", fsync_delay_ms=300).mount()
    teardown.callback(fs.unmount)
    agent = AgentProcess(config).start()
    probe = Probe(port, agent)

    try:
        wait_until(lambda: metrics(port).get("isoedge_mqtt_connected") == 1, timeout=30)
        probe.start()
        begun = time.time()
        wait_until(lambda: time.time() - begun > 20, timeout=40, interval=0.5)
        probe.stop()
        scraped: list[dict[str, float]] = []
        wait_until(lambda: bool(scraped.append(metrics(port)) or scraped[-1]), timeout=10)
        final = scraped[-1]
    finally:
        probe.stop()
        code = finish(agent, timeout=20)
    assert code == 0, agent.log()[-3000:]
    time.sleep(0.5)
    collector.stop()
    decoded = decode_all(collector.envelopes(), jwk)
    # Alerts were really raised and cleared meanwhile (each a write to the state store).
    flips = [a for a in events(decoded, "alerts") if a.get("rule") == "noisy-high"]
    assert len(flips) > 20, len(flips)
    gaps = poll_gaps(decoded, "steady")
    assert len(gaps) > 50
    late = sorted(gaps)[int(len(gaps) * 0.95)]
    print(f"slow disk: {len(gaps)} polls, mean {statistics.mean(gaps):.4f} s,"  # noqa: T201
          f" median {statistics.median(gaps):.4f} s, p95 {late:.4f} s,"
          f" max {max(gaps):.4f} s; console max {max(probe.latencies):.3f} s; RSS"
          f" {min(probe.rss) // 1024}-{max(probe.rss) // 1024} MiB; alert events {len(flips)};"
          f" held back {final.get('isoedge_acquisition_held_back_seconds_total')} s")
    # The poll interval holds within 10 % (mean and median) and 95 % of polls are within a
    # quarter interval: a poll loop that waited on the disk would be late at nearly every poll,
    # as the state database commits (and fsyncs, 300 ms here) all the time under this load.
    # A single stall is tolerated: on the suite's loaded 2-core machine one poll was seen 0.3 s
    # late while the agent took 8 s to start (on a quiet machine the largest interval is 0.202 s).
    assert abs(statistics.mean(gaps) - POLL_S) <= 0.1 * POLL_S, statistics.mean(gaps)
    assert abs(statistics.median(gaps) - POLL_S) <= 0.1 * POLL_S, statistics.median(gaps)
    assert late <= 1.25 * POLL_S, f"95th percentile poll interval {late:.3f} s"
    stalls = [round(g, 3) for g in gaps if g > 2 * POLL_S]
    assert len(stalls) <= 1, f"polls late by more than an interval: {stalls}"
    assert max(gaps) < 5 * POLL_S, f"a poll was {max(gaps):.3f} s late"
    assert probe.latencies and max(probe.latencies) < 1.0, f"console took {max(probe.latencies):.2f} s"
    assert max(probe.rss) - min(probe.rss[len(probe.rss) // 4 :]) < 64 * 1024, "RSS kept growing"
    assert "isoedge_acquisition_held_back_seconds_total" in final
