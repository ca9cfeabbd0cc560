"""CPU µs per reading, stage by stage, each stage timed on its own (process CPU time).

The peer bench's load: a Modbus TCP server (its own process) holding 100 float32 values,
one poll reading registers 0..99 as 50 float32 readings. Stages:

- request: one read of the block through the agent's Modbus bus (client side only);
- decode: the driver turning that response into samples (or one batch);
- pipeline: units, items, serialisation, live state, hand-over to the outbox;
- outbox: group commit (`fsync = "full"`), envelopes cut, Ed25519-signed, stored; polls
  arriving every millisecond, as at a 1 ms poll; measured as the whole process' CPU while
  the outbox thread works, minus the pacing loop alone.

It runs against whichever checkout is first on PYTHONPATH, so the same script measures the
code before and after a change:

    .venv/bin/python bench/stage_costs.py
    PYTHONPATH=/path/to/old/checkout .venv/bin/python /path/to/bench/stage_costs.py

Prints one JSON line. Publishing (MQTT) is not in it: see bench/peer.py for the total.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(HERE.parent))

import agent  # noqa: E402
from agent.acquisition.pipeline import Pipeline  # noqa: E402
from agent.acquisition.state import LiveState  # noqa: E402
from agent.delivery.outbox import Outbox  # noqa: E402
from agent.delivery.signing import generate_key_files  # noqa: E402
from drivers.modbus.config import ModbusTcpConfig  # noqa: E402

if (Path(agent.__file__).resolve().parent.parent / "drivers" / "registry.py").exists():
    from drivers.registry import create_driver
else:  # a checkout from before the driver registry
    from drivers.catalog import create_driver  # type: ignore[import-not-found,no-redef]

READINGS = 50


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config(port: int, poll_interval_s: float = 0.001) -> ModbusTcpConfig:
    """bench/peer.py's device: 50 float32 points in one block of 100 holding registers."""
    return ModbusTcpConfig.model_validate({
        "id": "plc-1", "type": "modbus_tcp", "host": "127.0.0.1", "port": port,
        "poll_interval_s": poll_interval_s,
        "points": [{"channel": f"v{i:02d}", "address": 2 * i, "data_type": "float32",
                    "unit": "Pa"} for i in range(READINGS)],
    })  # fmt: skip


class NullOutbox:
    """Takes what the pipeline hands over (the outbox is timed on its own)."""

    batch_max_items = 500
    saturated = False

    def __init__(self) -> None:
        self.texts: list[str] = []

    def submit(self, _stream: str, _device: str, text: str) -> None:
        self.texts.append(text)

    def submit_batch(self, _stream: str, _device: str, _n: int, text: str) -> None:
        self.texts.append(text)


def cpu_us_per_reading(fn: Any, rounds: int) -> float:
    start = time.process_time()
    for _ in range(rounds):
        fn()
    return (time.process_time() - start) / (rounds * READINGS) * 1e6


async def measure(port: int, rounds: int) -> dict[str, float]:
    device = config(port)
    driver: Any = create_driver(device)
    await driver.connect()
    bus, block = driver._bus, driver.plan[0]  # noqa: SLF001
    out: dict[str, float] = {}
    for _ in range(50):  # warm up
        response = await bus.read(block.table, block.address, block.count, 1)
    start = time.process_time()
    for _ in range(rounds):
        response = await bus.read(block.table, block.address, block.count, 1)
    out["request"] = (time.process_time() - start) / (rounds * READINGS) * 1e6

    batch_native = hasattr(driver, "_decode_block")
    if batch_native:
        decoder = driver.decoders[0]
        out["decode"] = cpu_us_per_reading(
            lambda: driver._decode_block(block, decoder, response), rounds  # noqa: SLF001
        )
        poll: Any = driver._decode_block(block, decoder, response)  # noqa: SLF001
    else:
        out["decode"] = cpu_us_per_reading(lambda: driver._decode(block, response), rounds)  # noqa: SLF001
        poll = driver._decode(block, response)  # noqa: SLF001
    await driver.close()

    sink = NullOutbox()
    pipeline = Pipeline(sink, LiveState(), {device.id: device})  # type: ignore[arg-type]
    if batch_native:
        out["pipeline"] = cpu_us_per_reading(lambda: pipeline.process_batch(poll), rounds)
    else:
        out["pipeline"] = cpu_us_per_reading(lambda: [pipeline.process(s) for s in poll], rounds)
    # The last poll's items: one row (batches) or the last 50 single items.
    last_poll = sink.texts[-1] if batch_native else ",".join(sink.texts[-READINGS:])
    sink.texts.clear()  # 150 000 live strings would slow the next stage's garbage collection
    out["outbox"] = await outbox_cost(last_poll, batch_native, rounds)
    return out


async def outbox_cost(text: str, batch_native: bool, rounds: int) -> float:
    """Process CPU per reading for polls submitted every millisecond, less the pacing."""
    items = json.loads("[" + text + "]") if not batch_native else []
    singles = [json.dumps(i, separators=(",", ":"), ensure_ascii=False) for i in items]
    assert batch_native or len(singles) == READINGS  # noqa: S101

    async def pace(submit: Any) -> float:
        start = time.process_time()
        next_at = time.monotonic()
        for _ in range(rounds):
            submit()
            next_at += 0.001
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        return time.process_time() - start

    idle = await pace(lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        signer = generate_key_files(Path(tmp) / "keys")
        outbox = Outbox(
            Path(tmp) / "outbox.db", signer, site="s", agent="a",
            topic_for=lambda s, d: f"t/{s}/{d}", quota_bytes=2**30, fsync="full",
        )  # fmt: skip
        await outbox.start()
        if batch_native:
            busy = await pace(lambda: outbox.submit_batch("readings", "plc-1", READINGS, text))
        else:
            busy = await pace(lambda: [outbox.submit("readings", "plc-1", s) for s in singles])
        start = time.process_time()
        await outbox.flush(timeout=60)
        busy += time.process_time() - start
        await outbox.close()
    return (busy - idle) / (rounds * READINGS) * 1e6


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(HERE / "peer.py"), "--serve-modbus", str(port)],
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        stages = asyncio.run(measure(port, rounds))
    finally:
        server.terminate()
        server.wait(10)
    print(json.dumps({
        "code": str(Path(agent.__file__).resolve().parent.parent),
        "us_per_reading": {k: round(v, 2) for k, v in stages.items()},
        "sum_us": round(sum(stages.values()), 2),
        "load": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
