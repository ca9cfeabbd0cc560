"""Long run (issue 14): 1 000 readings/s for 30 minutes, the broker restarted every 2 minutes,
an alert raised and cleared every minute. Prints RSS over time, file descriptors, threads,
readings lost and envelopes that failed verification.

The readings come from a synthetic counter device (1, 2, 3 ... per channel), so a lost reading
shows as a hole; a second device's sine (60 s period) crosses a threshold rule twice a minute.
A persistent-session subscriber verifies every envelope's Ed25519 signature, seq and hash
chain. At the end the broker stays up until the outbox is empty, the agent is stopped with
SIGTERM, and everything is counted.

    .venv/bin/python bench/soak.py                  # the full 30 minutes
    .venv/bin/python bench/soak.py --minutes 5      # a short run (say so when you report it)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.delivery.signing import b64url, generate_key_files  # noqa: E402
from agent.delivery.verification import KeyRegistry  # noqa: E402
from agent.tools.mosquitto import Mosquitto, free_port  # noqa: E402

RATE = 1000  # readings per second, all channels of the counter device


class Subscriber:
    """Persistent session (messages sent while the broker restarts are kept for it)."""

    def __init__(self, port: int, jwk: Path) -> None:
        self.keys = KeyRegistry.from_files([jwk])
        self.lock = threading.Lock()
        self.hashes: dict[int, str] = {}
        self.prevs: dict[int, str] = {}
        self.bad = 0
        self.forks = 0
        self.last: dict[str, float] = {}
        self.holes = 0
        self.readings = 0
        self.alerts: dict[str, int] = defaultdict(int)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"soak-{uuid.uuid4().hex[:8]}", clean_session=False,
                                  protocol=mqtt.MQTTv311)
        self.client.on_connect = lambda c, *_: c.subscribe("isoedge/v1/#", qos=1)
        self.client.on_message = self.on_message
        self.client.reconnect_delay_set(0.1, 1.0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def on_message(self, _c: Any, _u: Any, message: Any) -> None:
        if message.topic.endswith("/status"):
            return
        try:
            verified = self.keys.verify(message.payload)
            payload, document = verified.payload, verified.document
        except Exception:
            with self.lock:
                self.bad += 1
            return
        digest = b64url(hashlib.sha256(payload).digest())
        with self.lock:
            seq = document["seq"]
            if seq in self.hashes:
                self.forks += self.hashes[seq] != digest
                return
            self.hashes[seq] = digest
            self.prevs[seq] = document["prev"]
            for item in document["items"]:
                if document["stream"] == "alerts":
                    self.alerts[item.get("event", "?")] += 1
                if document["stream"] != "readings" or item["device"] != "counter":
                    continue
                self.readings += 1
                # Reading order within a channel follows seq order only per envelope; the
                # final check sorts, this one only counts.
                self.last[item["channel"]] = max(self.last.get(item["channel"], 0), item["value"])

    def summary(self) -> dict[str, Any]:
        with self.lock:
            seqs = sorted(self.hashes)
            gaps = (seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else 0
            breaks = sum(1 for s in seqs[1:] if s - 1 in self.hashes
                         and self.prevs[s] != self.hashes[s - 1])
            expected = int(sum(self.last.values()))
            return {"envelopes": len(seqs), "seq_gaps": gaps, "chain_breaks": breaks,
                    "bad_signatures": self.bad, "forked_seqs": self.forks,
                    "readings": self.readings, "readings_expected": expected,
                    "readings_lost": expected - self.readings, "alerts": dict(self.alerts)}

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def write_config(work: Path, broker_url: str, web_port: int) -> Path:
    path = work / "soak.toml"
    path.write_text(f"""
[agent]
site = "soak"
id = "edge"
state_dir = "state"
[broker]
url = "{broker_url}"
reconnect_initial_s = 0.2
reconnect_max_s = 2.0
[signing]
key_file = "keys/signing.key"
[web]
enabled = true
listen = "127.0.0.1:{web_port}"

[[devices]]
id = "counter"
type = "synthetic"
mode = "counter"
channels = ["a", "b", "c", "d"]
rate_per_s = {RATE}

[[devices]]
id = "wave"
type = "synthetic"
channels = ["x"]
base = 1.0
amplitude = 0.5
poll_interval_s = 0.5

[[rules]]
name = "wave-high"
type = "threshold"
device = "wave"
channel = "x"
high = 1.0
hysteresis = 0.1
severity = "warning"
""")
    return path


def proc_figures(pid: int) -> dict[str, int]:
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return {"rss_kib": rss, "fds": len(list(Path(f"/proc/{pid}/fd").iterdir())),
            "threads": len(list(Path(f"/proc/{pid}/task").iterdir()))}


def outbox_envelopes(web_port: int) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("isoedge_outbox_envelopes "):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def slope_mib_per_hour(samples: list[tuple[float, int]]) -> float:
    """Least-squares RSS growth (MiB per hour) over (seconds, KiB) samples."""
    if len(samples) < 3:
        return 0.0
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_r = sum(r for _, r in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    cov = sum((t - mean_t) * (r - mean_r) for t, r in samples)
    return (cov / var) * 3600 / 1024 if var else 0.0


def main() -> int:  # noqa: PLR0915 - one scenario, read top to bottom
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--restart-every", type=float, default=120.0, help="broker restart, s")
    parser.add_argument("--sample-every", type=float, default=10.0, help="RSS sample, s")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds ignored for RSS growth (default: a sixth of the run)")
    args = parser.parse_args()
    duration = args.minutes * 60
    warmup = args.warmup if args.warmup is not None else duration / 6
    with tempfile.TemporaryDirectory(prefix="isoedge-soak-") as tmp:
        work = Path(tmp)
        generate_key_files(work / "keys")
        broker = Mosquitto(work / "broker", persistent=True)
        broker.start()
        web_port = free_port()
        config = write_config(work, broker.url, web_port)
        subscriber = Subscriber(broker.port, work / "keys" / "signing.pub.jwk")
        log = (work / "agent.log").open("ab")
        agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "-c", str(config)],
                                 stdout=log, stderr=log, env=dict(os.environ, PYTHONPATH=str(REPO)))
        samples: list[dict[str, Any]] = []
        restarts = 0
        started = time.monotonic()
        next_restart = started + args.restart_every
        next_sample = started
        try:
            while (now := time.monotonic()) - started < duration:
                if agent.poll() is not None:
                    print(f"the agent exited with {agent.returncode}", file=sys.stderr)
                    return 1
                if now >= next_sample:
                    figures = {"t_s": round(now - started, 1), **proc_figures(agent.pid)}
                    samples.append(figures)
                    print(json.dumps(figures), flush=True)
                    next_sample += args.sample_every
                if now >= next_restart:
                    broker.stop()
                    time.sleep(1.0)
                    broker.start()
                    restarts += 1
                    next_restart += args.restart_every
                time.sleep(0.2)
            drain_deadline = time.monotonic() + 120
            while outbox_envelopes(web_port) != 0 and time.monotonic() < drain_deadline:
                time.sleep(0.5)
        finally:
            agent.send_signal(signal.SIGTERM)
            try:
                code = agent.wait(30)
            except subprocess.TimeoutExpired:
                agent.kill()
                code = agent.wait(10)
            time.sleep(2)
            subscriber.stop()
            broker.stop()
        after = [(s["t_s"], s["rss_kib"]) for s in samples if s["t_s"] >= warmup]
        steady = [s for s in samples if s["t_s"] >= warmup]
        result = {
            "minutes": args.minutes, "rate_per_s": RATE, "broker_restarts": restarts,
            "exit_code": code,
            "rss_kib_first": samples[0]["rss_kib"] if samples else None,
            "rss_kib_after_warmup": steady[0]["rss_kib"] if steady else None,
            "rss_kib_last": samples[-1]["rss_kib"] if samples else None,
            "rss_growth_mib_per_hour_after_warmup": round(slope_mib_per_hour(after), 2),
            "fds": sorted({s["fds"] for s in steady}),
            "threads": sorted({s["threads"] for s in steady}),
            **subscriber.summary(),
        }
        print(json.dumps(result))
        ok = (code == 0 and result["readings_lost"] == 0 and result["seq_gaps"] == 0
              and result["chain_breaks"] == 0 and result["bad_signatures"] == 0
              and result["forked_seqs"] == 0)
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
