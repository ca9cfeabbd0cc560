"""End-to-end throughput, latency and memory: synthetic source → agent → mosquitto → verifier.

Runs `isoedge run` as a subprocess against a private mosquitto; this process subscribes, verifies
every envelope's Ed25519 signature, seq and hash chain, and measures. Prints one line per figure.

    .venv/bin/python bench/throughput.py                  # every scenario
    .venv/bin/python bench/throughput.py --only latency   # one of: sustained latency rss backlog
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.delivery.signing import generate_key_files  # noqa: E402
from agent.delivery.verification import KeyRegistry  # noqa: E402
from agent.tools.mosquitto import Mosquitto  # noqa: E402


class Subscriber:
    """Verifies every envelope and records per-item latency (receive time minus item `t`)."""

    def __init__(self, port: int, jwk_path: Path) -> None:
        self.keys = KeyRegistry.from_files([jwk_path])
        self.items = 0
        self.envelopes = 0
        self.bytes = 0
        self.latencies: list[float] = []
        self.seqs: dict[int, str] = {}
        self.prevs: dict[int, str] = {}
        self.errors = 0
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        # Every signed stream (one seq covers them all), so a missing envelope shows as a gap.
        self.client.on_connect = lambda c, *_: c.subscribe(
            [(f"isoedge/v1/+/+/{stream}", 1) for stream in ("readings/+", "alerts", "audit")]
        )
        self.client.on_message = self.on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def on_message(self, _c, _u, message) -> None:
        now = time.time()
        try:
            verified = self.keys.verify(message.payload)
            payload, document = verified.payload, verified.document
        except Exception:
            self.errors += 1
            return
        with self.lock:
            self.bytes += len(message.payload)
            seq = document["seq"]
            if seq in self.seqs:
                return
            self.seqs[seq] = base64.urlsafe_b64encode(hashlib.sha256(payload).digest()).rstrip(
                b"="
            ).decode()
            self.prevs[seq] = document["prev"]
            self.envelopes += 1
            if document["stream"] != "readings":
                return
            items = document["items"]
            self.items += len(items)
            # Sample the latency of the first and last item of each envelope.
            for item in (items[0], items[-1]):
                t = datetime.fromisoformat(item["t"]).timestamp()
                self.latencies.append(now - t)

    def chain_breaks(self) -> int:
        with self.lock:
            return sum(
                1
                for s, prev in self.prevs.items()
                if s - 1 in self.seqs and self.seqs[s - 1] != prev
            )

    def seq_gaps(self) -> int:
        """Envelopes missing between the first and the last seq received."""
        with self.lock:
            return max(self.seqs) - min(self.seqs) + 1 - len(self.seqs) if self.seqs else 0

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def write_config(directory: Path, broker_url: str, devices: int, rate_per_device: float,
                 extra: str = "") -> Path:
    blocks = [
        f"""
[[devices]]
id = "dev-{i:03d}"
type = "synthetic"
channels = ["a", "b", "c", "d"]
rate_per_s = {rate_per_device}
"""
        for i in range(devices)
    ]
    path = directory / "bench.toml"
    path.write_text(
        f"""
[agent]
site = "bench"
id = "edge"
state_dir = "state"
[broker]
url = "{broker_url}"
max_inflight = 64
[signing]
key_file = "keys/signing.key"
[web]
enabled = false
{extra}
"""
        + "\n".join(blocks)
    )
    return path


def start_agent(config: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    log = (config.parent / "agent.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "agent", "run", "-c", str(config)],
                            stdout=log, stderr=log, env=env)


def stop_agent(agent: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not stopped: a bench never leaves an agent behind."""
    agent.terminate()
    try:
        agent.wait(15)
    except subprocess.TimeoutExpired:
        agent.kill()
        agent.wait(15)
        print("warning: the agent did not stop within 15 s of SIGTERM; killed", file=sys.stderr)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run_live(name: str, devices: int, rate: float, seconds: float, warmup: float = 3.0) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        generate_key_files(directory / "keys")
        broker = Mosquitto(directory / "broker")
        broker.start()
        subscriber = Subscriber(broker.port, directory / "keys" / "signing.pub.jwk")
        agent = start_agent(write_config(directory, broker.url, devices, rate))
        try:
            time.sleep(warmup)
            start_items, start = subscriber.items, time.monotonic()
            start_envelopes, start_bytes = subscriber.envelopes, subscriber.bytes
            subscriber.latencies.clear()
            time.sleep(seconds)
            items = subscriber.items - start_items
            envelopes = subscriber.envelopes - start_envelopes
            payload_bytes = subscriber.bytes - start_bytes
            elapsed = time.monotonic() - start
            rss = peak_rss_mb(agent.pid)
            latencies = list(subscriber.latencies)
        finally:
            stop_agent(agent)
            subscriber.stop()
            broker.stop()
        result = {
            "scenario": name,
            "devices": devices,
            "offered_per_s": devices * rate,
            "delivered_per_s": round(items / elapsed),
            "envelopes_per_s": round(envelopes / elapsed),
            "payload_kib_per_s": round(payload_bytes / elapsed / 1024),
            "latency_p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
            "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
            "agent_peak_rss_mb": round(rss, 1),
            "signature_errors": subscriber.errors,
            "chain_breaks": subscriber.chain_breaks(),
            "seq_gaps": subscriber.seq_gaps(),
        }
        print(json.dumps(result), flush=True)
        return result


async def _fill_outbox(config_path: Path, count: int) -> None:
    from agent.delivery.outbox import Outbox  # noqa: PLC0415
    from agent.delivery.signing import Signer  # noqa: PLC0415
    from agent.delivery.topics import Topics  # noqa: PLC0415
    from agent.service.config import load_config  # noqa: PLC0415

    config = load_config(config_path)
    topics = Topics(config.broker.topic_prefix, config.agent.site, config.agent.id)
    outbox = Outbox(config.outbox_path, Signer.load(config.signing.key_file), site="bench",
                    agent="edge", topic_for=topics.for_stream, quota_bytes=10 * 2**30)
    await outbox.start()
    template = (
        '{{"id":"{i:032x}","device":"dev-{d:03d}","channel":"a","t":"{t}","value":0.21,'
        '"unit":"uSv/h","quality":"good","raw":{{"value":0.21,"unit":"uSv/h","text":"0.210000"}}}}'
    )
    t = datetime.now().astimezone().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    step = 50_000
    for start in range(0, count, step):
        for i in range(start, min(count, start + step)):
            outbox.submit("readings", f"dev-{i % 10:03d}", template.format(i=i, d=i % 10, t=t))
        await outbox.flush(timeout=120)
        print(f"  filled {min(count, start + step):>9} readings", file=sys.stderr, flush=True)
    await outbox.close()


def run_backlog(count: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        generate_key_files(directory / "keys")
        broker = Mosquitto(directory / "broker")
        config = write_config(directory, broker.url, 0, 1)
        started = time.monotonic()
        asyncio.run(_fill_outbox(config, count))
        fill_s = time.monotonic() - started
        broker.start()
        subscriber = Subscriber(broker.port, directory / "keys" / "signing.pub.jwk")
        start = time.monotonic()
        agent = start_agent(config)
        try:
            while subscriber.items < count and time.monotonic() - start < 600:
                time.sleep(0.2)
            drain_s = time.monotonic() - start
            rss = peak_rss_mb(agent.pid)
        finally:
            stop_agent(agent)
            subscriber.stop()
            broker.stop()
        result = {
            "scenario": "backlog_drain",
            "backlog_readings": count,
            "fill_per_s": round(count / fill_s),
            "delivered": subscriber.items,
            "drain_s": round(drain_s, 1),
            "drain_per_s": round(subscriber.items / drain_s),
            "agent_peak_rss_mb": round(rss, 1),
            "signature_errors": subscriber.errors,
            "chain_breaks": subscriber.chain_breaks(),
            "seq_gaps": subscriber.seq_gaps(),
        }
        print(json.dumps(result), flush=True)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["sustained", "latency", "rss", "backlog"])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=25_000.0,
                        help="offered readings/s for the sustained scenario")
    args = parser.parse_args()
    if args.only in (None, "sustained"):
        run_live("sustained", 5, args.rate / 5, args.seconds)
    if args.only in (None, "latency"):
        run_live("latency_at_1000_per_s", 10, 100, args.seconds)
    if args.only in (None, "rss"):
        run_live("rss_50_devices", 50, 4, args.seconds)
    if args.only in (None, "backlog"):
        run_backlog(args.backlog)


if __name__ == "__main__":
    main()
