"""Power cuts at random moments, shared by the suite (5 cuts) and bench/powercut.py (50 or more).

The agent's state directory lives on a `CutFS`. Each cycle: start the agent, let it acquire,
publish and receive acknowledgements for a random while (with the broker sometimes stopped,
so a backlog builds and is drained across cuts), note what the agent reported as durable on
/metrics, then cut the power: the file system loses every write not fsynced at that instant and
the agent is killed with it. After the cut every database must open and pass
`PRAGMA integrity_check`, and the audit trail's own hash chain must hold.

At the end the broker is up and the last agent drains everything: every envelope arrived
(seq 1, 2, 3 ... across all cuts, each `prev` the hash of its predecessor, no seq ever sent
with two different payloads), and every reading the agent had counted as durable before a
cut was delivered.
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from agentproc import AgentProcess, counter_devices, make_keys
from collector import Collector, assert_gapless_chain, jose_verify
from faults.cutfs import CutFS
from faults.scenario import backlog_drained, fault_config, metrics, reading_runs_are_whole
from helpers import wait_until

DURABLE_METRIC = 'isoedge_outbox_items_committed_total{stream="readings"}'


@dataclass
class Cycle:
    """One run of the agent ended by a power cut."""

    started: float
    cut_at: float = 0.0
    durable_readings: float = 0.0  # last value of DURABLE_METRIC read before the cut
    broker_up: bool = True
    integrity: dict[str, str] = field(default_factory=dict)


class MetricWatcher(threading.Thread):
    """Polls /metrics and keeps the last value of the durable counter read before `stop()`."""

    def __init__(self, port: int) -> None:
        super().__init__(name="metric-watcher", daemon=True)
        self.port = port
        self.value = 0.0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            found = metrics(self.port).get(DURABLE_METRIC)
            if found is not None and not self._stop_event.is_set():
                self.value = found
            self._stop_event.wait(0.02)

    def stop(self) -> float:
        self._stop_event.set()
        self.join(5)
        return self.value


def broker_running(mosquitto: Any) -> bool:
    """True while the test's mosquitto process runs."""
    return mosquitto.proc is not None and mosquitto.proc.poll() is None


def check_databases(state: Path) -> dict[str, str]:
    """PRAGMA integrity_check of every SQLite database in the state directory."""
    out: dict[str, str] = {}
    for path in sorted(state.glob("*.db")):
        db = sqlite3.connect(path)
        try:
            out[path.name] = str(db.execute("PRAGMA integrity_check").fetchone()[0])
        finally:
            db.close()
    return out


def audit_chain_ok(state: Path) -> bool:
    """The audit trail's own hash chain (stored with each record) holds."""
    for path in sorted(state.glob("*.db")):
        db = sqlite3.connect(path)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            if "audit" not in tables:
                continue
            previous = ""
            for item, digest in db.execute("SELECT item, hash FROM audit ORDER BY seq"):
                expected = hashlib.sha256((previous + item).encode()).hexdigest()
                if expected != digest:
                    return False
                previous = digest
            return True
        finally:
            db.close()
    return False


def audit_debug(state: Path) -> str:
    out = []
    for path in sorted(state.glob("*")):
        out.append(f"{path.name}:{path.stat().st_size}")
        if path.suffix == ".db":
            db = sqlite3.connect(path)
            try:
                out.append(str([r[0] for r in db.execute("SELECT name FROM sqlite_master")]))
            finally:
                db.close()
    return " ".join(out)


def run_power_cuts(tmp_path: Path, mosquitto: Any, cuts: int, *, seed: int,
                   rate_interval: float = 0.005) -> dict[str, Any]:
    """Run `cuts` cycles; raise AssertionError on the first broken promise; return figures."""
    rng = random.Random(seed)
    jwk = make_keys(tmp_path / "keys")
    collector = Collector(mosquitto.port).start()
    config, port = fault_config(
        tmp_path, mosquitto.url, counter_devices(2, rate_interval),
        outbox="batch_max_age_ms = 20",
    )
    state = tmp_path / "state"
    fs = CutFS(tmp_path / "backing", state).mount()
    cycles: list[Cycle] = []
    try:
        for _ in range(cuts):
            cycle = Cycle(started=time.time())
            cycles.append(cycle)
            agent = AgentProcess(config).start()
            try:
                wait_until(lambda: metrics(port).get(DURABLE_METRIC, 0) > 0, timeout=30)
                watcher = MetricWatcher(port)
                watcher.start()
                # A random moment: acquiring, publishing, waiting for PUBACKs, deleting.
                if rng.random() < 0.3 and broker_running(mosquitto):
                    time.sleep(rng.uniform(0.0, 0.8))
                    mosquitto.stop()
                elif not broker_running(mosquitto):
                    mosquitto.start()
                cycle.broker_up = broker_running(mosquitto)
                time.sleep(rng.uniform(0.2, 2.0))
                cycle.durable_readings = watcher.stop()
                cycle.cut_at = time.time()
                fs.cut()  # every unsynced write is gone, now
            finally:
                agent.stop_quietly()  # the power is off for the agent too
            fs.remount()
            cycle.integrity = check_databases(state)
            assert cycle.integrity, f"cut {len(cycles)}: no database found after the cut"
            bad = {k: v for k, v in cycle.integrity.items() if v != "ok"}
            assert not bad, f"cut {len(cycles)}: integrity_check failed: {bad}"
            assert audit_chain_ok(state), (
                f"cut {len(cycles)}: the audit hash chain is broken or missing:"
                f" {audit_debug(state)}"
            )
        if not broker_running(mosquitto):
            mosquitto.start()
        final = AgentProcess(config).start()
        try:
            wait_until(lambda: backlog_drained(metrics(port)), timeout=120, interval=0.2)
        finally:
            assert final.terminate() == 0, final.log()[-3000:]
        time.sleep(1)
    finally:
        collector.stop()
        fs.unmount()
    return verify_delivery(collector, jwk, cycles)


def verify_delivery(collector: Collector, jwk: dict[str, Any],
                    cycles: list[Cycle]) -> dict[str, Any]:
    """Every promise of the module docstring, checked on what the broker delivered."""
    by_seq: dict[int, bytes] = {}
    decoded: list[tuple[str, dict[str, Any], bytes]] = []
    import json

    for message in collector.envelopes():
        _header, payload = jose_verify(message.payload, jwk)
        document = json.loads(payload)
        seq = document["seq"]
        if seq in by_seq:
            assert by_seq[seq] == payload, f"seq {seq} was sent with two different payloads"
            continue
        by_seq[seq] = payload
        decoded.append((message.topic, document, payload))
    decoded.sort(key=lambda entry: entry[1]["seq"])
    assert_gapless_chain(decoded)
    runs = reading_runs_are_whole(decoded)
    for number, cycle in enumerate(cycles, 1):
        delivered = sum(
            1
            for _t, doc, _p in decoded if doc["stream"] == "readings"
            for item in doc["items"]
            if cycle.started <= datetime.fromisoformat(item["t"]).timestamp() <= cycle.cut_at
        )
        assert delivered >= cycle.durable_readings, (
            f"cut {number}: {cycle.durable_readings:.0f} readings were durable before the cut,"
            f" {delivered} of them delivered"
        )
    return {
        "cuts": len(cycles),
        "envelopes": len(decoded),
        "readings": runs["readings"],
        "durable_before_cuts": sum(c.durable_readings for c in cycles),
        "cuts_with_broker_down": sum(not c.broker_up for c in cycles),
    }
