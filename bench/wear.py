"""Storage wear (issue 22): bytes written to storage per reading acquired, at a site's load.

Runs `isoedge demo` (its five simulated instruments, ~30 readings/s, a private broker, the
console) as a child process, and a 20-device variant (the demo plus fifteen more Modbus TCP
instruments, each with its own simulator). After a warm-up it reads the agent process's
`write_bytes` from /proc/PID/io (bytes the process caused to be sent to the storage layer:
the state database, its WAL, logs, everything) and the readings committed (the console's
/metrics, `isoedge_outbox_items_committed{stream="readings"}`), and again at the end. It
prints bytes written per reading, GB written per day, and the life of an SD card of the
stated endurance at that rate (capacity x P/E cycles, write amplification 1: a best case).

The state directory is on the disk that holds this checkout (not /tmp, which may be tmpfs
and write nothing).

    .venv/bin/python bench/wear.py                         # both loads, 5 minutes each
    .venv/bin/python bench/wear.py --load demo --seconds 60  # a quick check (say so)
    .venv/bin/python bench/wear.py --card-gb 32 --pe-cycles 3000
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.tools.mosquitto import free_port  # noqa: E402

EXTRA_DEVICES = 15
"""The 20-device variant: this many Modbus TCP instruments besides the demo's five."""

_AUTH = "Basic " + base64.b64encode(b"tech:tech-demo").decode("ascii")  # a demo user
_COMMITTED = re.compile(
    r'^isoedge_outbox_items_committed_total\{stream="readings"\} (\S+)$', re.MULTILINE
)


def write_bytes(pid: int) -> int:
    """`write_bytes` of /proc/PID/io: bytes the process sent to the storage layer."""
    text = Path(f"/proc/{pid}/io").read_text(encoding="ascii")
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "write_bytes":
            return int(value)
    raise RuntimeError(f"/proc/{pid}/io has no write_bytes")


def readings_committed(web: str) -> int:
    """Readings committed to the state database so far (the console's /metrics)."""
    request = urllib.request.Request(f"http://{web}/metrics", headers={"Authorization": _AUTH})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        text = response.read().decode("utf-8")
    match = _COMMITTED.search(text)
    return 0 if match is None else int(float(match.group(1)))


def device_block(text: str, device: str) -> str:
    """The TOML text of one `[[devices]]` entry (its points included)."""
    lines = text.splitlines(keepends=True)
    start = next(
        i
        for i, line in enumerate(lines)
        if line.startswith("[[devices]]") and lines[i + 1].strip() == f'id = "{device}"'
    )
    end = start + 1
    while end < len(lines) and not (
        (lines[end].startswith("[") and not lines[end].startswith(("[devices.", "[[devices.")))
        or lines[end].startswith("[[devices]]")
    ):
        end += 1
    return "".join(lines[start:end])


def twenty_device_config(demo: Path, target: Path) -> Path:
    """The demo configuration with fifteen more Modbus TCP instruments and their simulators."""
    text = demo.read_text(encoding="utf-8")
    parts = [text]
    for index in range(EXTRA_DEVICES):
        source, profile = (
            ("hotcell-1", "hotcell") if index % 2 == 0 else ("area-monitor-1", "area_monitor")
        )
        device = f"{source.rsplit('-', 1)[0]}-x{index + 1}"
        block = device_block(text, source).replace(f'id = "{source}"', f'id = "{device}"', 1)
        parts.append("\n" + block)
        parts.append(
            f'\n[[demo.simulators]]\nkind = "modbus"\ndevice = "{device}"\n'
            f'options = {{ profile = "{profile}", transport = "tcp" }}\n'
        )
    target.write_text("".join(parts), encoding="utf-8")
    tomllib.loads(target.read_text(encoding="utf-8"))  # fails here, not in the demo
    return target


def measure(load: str, seconds: float, warmup: float, work: Path) -> dict[str, Any]:
    """Run one load and return its figures."""
    demo_config = REPO / "config" / "demo.toml"
    config = demo_config
    if load == "20":
        config = twenty_device_config(demo_config, work / "demo20.toml")
    web = f"127.0.0.1:{free_port()}"
    state = work / f"state-{load}"
    command = [
        sys.executable,
        "-m",
        "agent.tools.cli",
        "demo",
        "--plain",
        "--duration",
        str(warmup + seconds + 120),
        "--state-dir",
        str(state),
        "--web",
        web,
        "--config",
        str(config),
    ]
    log_path = work / f"demo-{load}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                readings_committed(web)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the demo did not start; see {log_path}") from None
                time.sleep(0.5)
        time.sleep(warmup)
        bytes0, readings0, t0 = write_bytes(process.pid), readings_committed(web), time.monotonic()
        time.sleep(seconds)
        bytes1, readings1, t1 = write_bytes(process.pid), readings_committed(web), time.monotonic()
        db = state / "state" / "outbox.db"
        db_bytes = db.stat().st_size if db.exists() else 0
        wal = db.with_name(db.name + "-wal")
        wal_bytes = wal.stat().st_size if wal.exists() else 0
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    written, readings, elapsed = bytes1 - bytes0, readings1 - readings0, t1 - t0
    return {
        "load": "demo (5 instruments)" if load == "demo" else "demo + 15 Modbus TCP (20)",
        "seconds": round(elapsed, 1),
        "readings": readings,
        "readings_per_s": round(readings / elapsed, 1),
        "bytes_written": written,
        "bytes_per_reading": round(written / readings, 1) if readings else None,
        "bytes_per_s": round(written / elapsed),
        "gb_per_day": round(written / elapsed * 86400 / 1e9, 3),
        "db_bytes": db_bytes,
        "wal_bytes": wal_bytes,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--load",
        choices=["demo", "20", "both"],
        default="both",
        help="the demo's five instruments, the 20-device variant, or both",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=300.0,
        help="measured time per load after the warm-up (default 5 minutes)",
    )
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before measuring")
    parser.add_argument("--card-gb", type=float, default=32.0, help="SD card capacity, GB")
    parser.add_argument(
        "--pe-cycles", type=float, default=3000.0, help="program/erase cycles the card is rated for"
    )
    parser.add_argument("--keep", action="store_true", help="keep the state directories")
    args = parser.parse_args()
    if not Path("/proc/self/io").exists():
        print(
            "cannot run: no /proc/PID/io (Linux with task I/O accounting needed)", file=sys.stderr
        )
        return 2
    loads = ["demo", "20"] if args.load == "both" else [args.load]
    work = Path(tempfile.mkdtemp(prefix=".wear-", dir=REPO))
    endurance_gb = args.card_gb * args.pe_cycles
    try:
        for load in loads:
            figures = measure(load, args.seconds, args.warmup, work)
            gb_day = figures["gb_per_day"]
            years = endurance_gb / gb_day / 365.25 if gb_day else float("inf")
            figures["card"] = f"{args.card_gb:g} GB x {args.pe_cycles:g} P/E"
            figures["card_life_years"] = round(years, 1)
            print(json.dumps(figures))
            print(
                f"{figures['load']}: {figures['readings_per_s']} readings/s,"
                f" {figures['bytes_per_reading']} bytes written per reading,"
                f" {figures['bytes_per_s'] / 1000:.1f} kB/s = {gb_day} GB/day;"
                f" a {figures['card']} card lasts {years:.1f} years at that rate"
                f" (write amplification 1)",
                flush=True,
            )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"state kept in {work}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
