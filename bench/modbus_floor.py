"""The Modbus request loop alone: CPU per poll, against the budget twice Node-RED leaves.

Issue 13 asks for twice Node-RED's readings per CPU-second on bench/peer.py's load (one
read of 100 holding registers per poll, 50 float32 readings). Both systems read the same
50 readings per poll, so the target is a CPU budget per poll: half of what Node-RED's whole
process spends on one. This measures what the request loop costs before anything of the
data path runs (no pipeline, no outbox, no signing, no MQTT), at the given poll intervals,
in one process against peer.py's pymodbus server:

- `pymodbus-async`: pymodbus' asyncio client (`read_holding_registers`, `asyncio.sleep`
  between polls) — what the agent's Modbus buses use;
- `pymodbus-sync-thread`: pymodbus' synchronous client on a thread of its own (`time.sleep`
  between polls), each response handed to the event loop (`call_soon_threadsafe`) as the
  agent would need it;
- `isoedge-driver`: the agent's `ModbusTcpDriver.batches()` (the asyncio client, the poll
  schedule and the decode of each block into one batch).

CPU is the process's (all threads), `time.process_time()`, over `--polls` polls after 50 of
warm-up. With `--node-red` it first runs bench/peer.py's Node-RED set-up at the same intervals
and prints the budget per poll; without it, pass Node-RED's readings per CPU-second from a
peer run with `--node-red-readings-per-cpu-s` (e.g. 38884 at 5 ms) to get the same line.

    .venv/bin/python bench/modbus_floor.py --intervals 5 1 --node-red
    .venv/bin/python bench/modbus_floor.py --intervals 5 --node-red-readings-per-cpu-s 38884

Prints one JSON line per loop and interval, and one budget line per interval.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import peer  # noqa: E402
import stage_costs  # noqa: E402
from pymodbus.client import AsyncModbusTcpClient, ModbusTcpClient  # noqa: E402

from agent.tools.mosquitto import free_port  # noqa: E402
from drivers.registry import create_driver  # noqa: E402

WARMUP_POLLS = 50
TIMEOUT_S = 1.0


async def pymodbus_async(port: int, interval: float, polls: int) -> float:
    """CPU µs per poll of pymodbus' asyncio client."""
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=TIMEOUT_S, retries=0,
                                  reconnect_delay=0.0)  # fmt: skip
    async with asyncio.timeout(5):
        await client.connect()
    try:

        async def poll() -> None:
            async with asyncio.timeout(TIMEOUT_S + 0.5):
                response = await client.read_holding_registers(
                    0, count=peer.READ_REGISTERS, device_id=1
                )
            if len(response.registers) != peer.READ_REGISTERS:
                raise RuntimeError(f"short answer: {len(response.registers)} registers")
            await asyncio.sleep(interval)

        for _ in range(WARMUP_POLLS):
            await poll()
        start = time.process_time()
        for _ in range(polls):
            await poll()
        return (time.process_time() - start) / polls * 1e6
    finally:
        client.close()


async def pymodbus_sync_thread(port: int, interval: float, polls: int) -> float:
    """CPU µs per poll of pymodbus' synchronous client on its own thread."""
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=TIMEOUT_S, retries=0)
    if not client.connect():
        raise RuntimeError(f"cannot connect to 127.0.0.1:{port}")
    loop = asyncio.get_running_loop()
    handed: asyncio.Queue[Any] = asyncio.Queue()
    failure: list[BaseException] = []

    def reader() -> None:
        try:
            for index in range(WARMUP_POLLS + polls):
                response = client.read_holding_registers(0, count=peer.READ_REGISTERS,
                                                         device_id=1)  # fmt: skip
                if index >= WARMUP_POLLS - 1:
                    loop.call_soon_threadsafe(handed.put_nowait, response.registers)
                time.sleep(interval)
        except BaseException as exc:  # handed over to the loop, which raises it
            failure.append(exc)
        finally:
            loop.call_soon_threadsafe(handed.put_nowait, None)

    thread = threading.Thread(target=reader, name="modbus-floor", daemon=True)
    thread.start()
    try:
        async with asyncio.timeout(60):
            await handed.get()  # the last warm-up poll: the window starts here
            start = time.process_time()
            while (registers := await handed.get()) is not None:
                if len(registers) != peer.READ_REGISTERS:
                    raise RuntimeError(f"short answer: {len(registers)} registers")
            spent = time.process_time() - start
    finally:
        await asyncio.to_thread(thread.join, 30)
        client.close()
    if failure:
        raise failure[0]
    return spent / polls * 1e6


async def isoedge_driver(port: int, interval: float, polls: int) -> float:
    """CPU µs per poll of the agent's Modbus TCP driver (requests, schedule, decode)."""
    driver: Any = create_driver(stage_costs.config(port, poll_interval_s=interval))
    async with asyncio.timeout(5):
        await driver.connect()
    try:
        batches = driver.batches()
        for _ in range(WARMUP_POLLS):
            await anext(batches)
        start = time.process_time()
        for _ in range(polls):
            batch = await anext(batches)
            if len(batch.values) != peer.READINGS_PER_POLL:
                raise RuntimeError(f"batch of {len(batch.values)} readings")
        spent = time.process_time() - start
        await batches.aclose()
    finally:
        await driver.close()
    return spent / polls * 1e6


LOOPS = {
    "pymodbus-async": pymodbus_async,
    "pymodbus-sync-thread": pymodbus_sync_thread,
    "isoedge-driver": isoedge_driver,
}


def node_red_readings_per_cpu_s(interval_ms: int, seconds: float) -> int:
    """Node-RED's readings per CPU-second at this poll, measured as bench/peer.py does."""
    install = peer.ensure_node_red()
    result = peer.run_system("node-red", install, interval_ms, 3.0, seconds)
    print(json.dumps(result), flush=True)
    return int(result["readings_per_cpu_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intervals", type=int, nargs="+", default=[5, 1],
                        help="poll intervals in ms (default: 5 1)")
    parser.add_argument("--polls", type=int, default=2000, help="measured polls per loop")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each loop, alternating")
    parser.add_argument("--node-red", action="store_true",
                        help="measure Node-RED at each interval first (bench/peer.py's set-up)")
    parser.add_argument("--node-red-readings-per-cpu-s", type=float,
                        help="Node-RED's figure from a peer run, for the budget line")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="Node-RED's measured window (with --node-red)")
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen([sys.executable, str(HERE / "peer.py"), "--serve-modbus",
                               str(port)], stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        peer.wait_port(port)
        for interval_ms in args.intervals:
            red = (node_red_readings_per_cpu_s(interval_ms, args.seconds) if args.node_red
                   else args.node_red_readings_per_cpu_s)  # fmt: skip
            costs: dict[str, list[float]] = {name: [] for name in LOOPS}
            for _ in range(args.repeat):
                for name, loop in LOOPS.items():
                    us = asyncio.run(loop(port, interval_ms / 1000, args.polls))
                    costs[name].append(us)
                    print(json.dumps({"loop": name, "poll_ms": interval_ms, "polls": args.polls,
                                      "cpu_us_per_poll": round(us, 1),
                                      "load": peer.load_average()}), flush=True)  # fmt: skip
            if red:
                node_red_us = peer.READINGS_PER_POLL * 1e6 / red
                print(json.dumps({
                    "poll_ms": interval_ms,
                    "node_red_cpu_us_per_poll": round(node_red_us, 1),
                    "budget_us_per_poll_for_2x": round(node_red_us / 2, 1),
                    "floor_us_per_poll": {name: round(min(v), 1) for name, v in costs.items()},
                }), flush=True)
    finally:
        peer.stop(server)


if __name__ == "__main__":
    main()
