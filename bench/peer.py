"""IsoEdge against Node-RED on the same Modbus TCP load: readings per CPU-second, peak RSS.

One pymodbus TCP server (its own process) holds 100 float32 values in holding registers
0..199; every poll reads registers 0..99 as one request and turns them into 50 float32
readings (the load of issue 13). One mosquitto. Then each system in turn, at 1000, 100, 20, 5
and 1 ms polls:

- Node-RED 4 + node-red-contrib-modbus 5.23: modbus-read (FC 3, 100 registers) → a function
  node decoding the 50 floats into one JSON message per poll → mqtt out, QoS 1. Unsigned,
  in memory: Node-RED's best case.
- `isoedge run`: one modbus_tcp device with 50 float32 points, Ed25519 signing,
  `fsync = "full"` outbox.

The system measured runs pinned to one core (`taskset -c CORE`, default the last core this
process may use: a stand-in for one Raspberry Pi-class core); the bench itself, the Modbus
server, mosquitto and the subscriber run on the other cores, so the system has its core to
itself as far as this bench is concerned (other work on the machine may still share it).

A subscriber in this process decodes every payload (JSON for Node-RED, the JWS payload for
IsoEdge) and counts the readings delivered. CPU is utime+stime of the system's process from
/proc/PID/stat over the measured window; peak RSS is VmHWM at the end. The window is
`--seconds` or 60 polls, whichever is longer, at most 60 s: at 1000 ms polls a system spends
a fraction of a second of CPU in 15 s, which the kernel's 10 ms tick cannot resolve.

Then one line for the agent idle at a site: `isoedge run` with config/demo.toml's five
instruments (Modbus TCP hot cell and area monitor, Modbus RTU area monitor on a pty, OPC UA
synthesis module, dose calibrator on a pty), every one at 1 Hz, pinned the same way; the
simulators run in a process of their own, so the CPU reported (% of one core) is the agent's
alone.

Each system runs as its users install it: Node-RED and the contrib node with npm, IsoEdge
with pip (this checkout, editable, so the code measured is the checkout's) into a venv of its
own, with its runtime dependencies and none of the test tools. Both go into a scratch directory
(`$ISOEDGE_BENCH_CACHE`, default `$XDG_CACHE_HOME/isoedge-bench` or `~/.cache/isoedge-bench`),
never into the repository, reused while pyproject.toml is unchanged. (A test tool in the
development venv can change what the agent loads: structlog imports `rich` when it is
installed.) `--agent-python` runs the agent with another interpreter. Needs node ≥ 18, npm,
mosquitto and taskset (util-linux).

The server's values repeat from poll to poll by default (the figures of earlier runs); with
`--changing-values` they change every 0.5 ms to arbitrary float32s, so a system that decodes
repeated registers once gains nothing from it.

    .venv/bin/python bench/peer.py                         # every rate, both systems, idle
    .venv/bin/python bench/peer.py --polls 5 --seconds 10 --only isoedge --no-idle
    .venv/bin/python bench/peer.py --polls --only isoedge   # the idle line alone

Prints one JSON line per system per poll, then one ratio line per poll
(readings per CPU-second of IsoEdge / Node-RED), then the idle line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO / "config" / "demo.toml"
sys.path.insert(0, str(REPO))

from agent.delivery.signing import PRIVATE_KEY_NAME, generate_key_files  # noqa: E402
from agent.tools.mosquitto import Mosquitto, free_port  # noqa: E402

NODE_RED_VERSION = "4"
CONTRIB_MODBUS_VERSION = "5.23"
VALUES = 100  # float32 values held by the server (200 registers)
READ_REGISTERS = 100  # registers one poll reads ...
READINGS_PER_POLL = READ_REGISTERS // 2  # ... as 50 float32 readings
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROFILE: dict[str, str] = {}  # --profile: py-spy binary and output file
AGENT_PYTHON: list[str] = [sys.executable]  # the interpreter `isoedge run` is started with
PIN: list[str] = []  # `taskset -c CORE`: the system measured runs on one core
MAX_WINDOW_S = 60.0  # a window of 60 polls at slow rates, never longer than this


# ----------------------------------------------------------------------------- helpers
def cache_dir() -> Path:
    """Scratch directory for the npm install (outside the repository)."""
    explicit = os.environ.get("ISOEDGE_BENCH_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "isoedge-bench"


def scratch_dir(name: str) -> Path:
    """`name` in the scratch directory; refused when that would be inside the repository."""
    directory = cache_dir() / name
    if (REPO in directory.resolve().parents) or directory.resolve() == REPO:
        sys.exit(f"{directory}: the scratch directory must be outside the repository")
    return directory


def ensure_node_red() -> Path:
    """Node-RED 4 and node-red-contrib-modbus 5.23 in the scratch directory; its path."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        sys.exit("node and npm are needed: apt-get install nodejs npm (node >= 18)")
    major = int(
        subprocess.check_output([node, "--version"], text=True).strip().lstrip("v").split(".")[0]
    )
    if major < 18:
        sys.exit(f"Node-RED 4 needs node >= 18, found {major}")
    directory = scratch_dir("node-red")
    red = directory / "node_modules" / "node-red" / "red.js"
    contrib = directory / "node_modules" / "node-red-contrib-modbus" / "package.json"
    if not (red.exists() and contrib.exists()):
        directory.mkdir(parents=True, exist_ok=True)
        manifest = directory / "package.json"
        if not manifest.exists():
            manifest.write_text('{"name": "isoedge-peer-bench", "private": true}\n')
        print(f"installing Node-RED into {directory} (npm) ...", file=sys.stderr, flush=True)
        subprocess.run(
            [
                npm,
                "install",
                "--no-audit",
                "--no-fund",
                f"node-red@{NODE_RED_VERSION}",
                f"node-red-contrib-modbus@{CONTRIB_MODBUS_VERSION}",
            ],
            cwd=directory,
            check=True,
            stdout=sys.stderr,
        )
    return directory


def ensure_agent_venv() -> Path:
    """A venv holding IsoEdge as `pip install` leaves it (no test tools); its python.

    Keyed by pyproject.toml, so a change of dependencies or entry points gets a fresh one.
    """
    manifest = (REPO / "pyproject.toml").read_bytes()
    key = hashlib.sha256(manifest).hexdigest()[:12]
    directory = scratch_dir(f"agent-venv-{key}")
    python = directory / "bin" / "python"
    if not (directory / ".complete").exists():
        print(
            f"installing IsoEdge's runtime dependencies into {directory} (pip) ...",
            file=sys.stderr,
            flush=True,
        )
        shutil.rmtree(directory, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(directory)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-e", str(REPO)],
            check=True,
            stdout=sys.stderr,
        )
        dependencies = tomllib.loads(manifest.decode())["project"]["dependencies"]
        (directory / ".complete").write_text("\n".join(dependencies) + "\n")
    return python


def versions(directory: Path) -> dict[str, str]:
    out = {}
    for name in ("node-red", "node-red-contrib-modbus"):
        manifest = directory / "node_modules" / name / "package.json"
        out[name] = json.loads(manifest.read_text())["version"]
    out["node"] = subprocess.check_output(["node", "--version"], text=True).strip()
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (children not included), in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread ("name/tid"): the event loop against the outbox thread.

    From the scheduler's own account (`se.sum_exec_runtime` in /proc/PID/task/TID/sched,
    nanoseconds) where the kernel gives it; else from utime + stime, which the kernel counts in
    whole ticks by sampling (at 1 % of a core, 100 ticks a second hit the process about once a
    second: a minute's figure is then good to about a tenth of itself, and no better).
    """
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            out[f"{name}/{task.name}"] = _sched_runtime_s(task) or _tick_cpu_s(task)
        except (OSError, ValueError):
            continue
    return out


def _sched_runtime_s(task: Path) -> float | None:
    for line in (task / "sched").read_text().splitlines() if (task / "sched").exists() else ():
        if line.startswith("se.sum_exec_runtime"):
            milliseconds = float(line.split(":", 1)[1])
            return milliseconds / 1000 if milliseconds > 0 else None
    return None


def _tick_cpu_s(task: Path) -> float:
    text = (task / "stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_clock(pid: int) -> str:
    """Which account `thread_cpu` reads for PID: "sched" (exact) or "ticks" (sampled)."""
    return "sched" if _sched_runtime_s(Path(f"/proc/{pid}/task/{pid}")) else "ticks"


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load_average() -> str:
    """1, 5 and 15 minute load averages (other work shares the cores)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def wait_port(port: int, timeout: float = 15.0) -> None:
    import socket  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# ------------------------------------------------------------------------ modbus server
def register_values(noise: random.Random | None = None) -> list[int]:
    """200 holding registers: 100 float32 values, big-endian words (ABCD).

    With `noise`, each value moves by a random fraction: arbitrary float32 values (seven to
    nine significant digits), as a live sensor gives, instead of ones that repeat.
    """
    words: list[int] = []
    for i in range(VALUES):
        blob = struct.pack(">f", 10.0 + i * 0.25 + (noise.random() if noise else 0.0))
        words += [int.from_bytes(blob[0:2], "big"), int.from_bytes(blob[2:4], "big")]
    return words


CHANGE_EVERY_S = 0.0005  # --changing-values: new values at least as often as the fastest poll


async def _keep_changing(block: Any) -> None:
    noise = random.Random(1)
    while True:
        block.setValues(1, register_values(noise))
        await asyncio.sleep(CHANGE_EVERY_S)


def serve_modbus(port: int, *, changing: bool = False) -> None:
    """Run the pymodbus TCP server until killed (a child process of the bench)."""
    from pymodbus.datastore import (  # noqa: PLC0415
        ModbusDeviceContext,
        ModbusSequentialDataBlock,
        ModbusServerContext,
    )
    from pymodbus.server import StartAsyncTcpServer  # noqa: PLC0415

    # pymodbus addresses a data block from 1 for protocol address 0.
    block = ModbusSequentialDataBlock(1, register_values())
    device = ModbusDeviceContext(hr=block)
    context = ModbusServerContext(devices=device, single=True)

    async def serve() -> None:
        changer = asyncio.create_task(_keep_changing(block)) if changing else None
        try:
            await StartAsyncTcpServer(context=context, address=("127.0.0.1", port))
        finally:
            if changer is not None:
                changer.cancel()

    asyncio.run(serve())


# --------------------------------------------------------------------------- subscriber
class Counter:
    """Decodes every payload and counts readings (Node-RED JSON or an IsoEdge JWS)."""

    def __init__(self, port: int) -> None:
        self.readings = 0
        self.messages = 0
        self.errors = 0
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"peer-{port}")
        self.client.on_connect = lambda c, *_: c.subscribe(
            [("peer/nodered/#", 1), ("isoedge/v1/+/+/readings/+", 1)]
        )
        self.client.on_message = self.on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            document = json.loads(message.payload)
            if "payload" in document and "protected" in document:  # a flattened JWS
                raw = document["payload"]
                payload = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
                count = sum(1 for item in payload["items"] if item.get("value") is not None)
            else:
                count = sum(1 for r in document["readings"] if r.get("value") is not None)
        except (ValueError, KeyError, TypeError):
            with self.lock:
                self.errors += 1
            return
        with self.lock:
            self.readings += count
            self.messages += 1

    def snapshot(self) -> tuple[int, int]:
        with self.lock:
            return self.readings, self.messages

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# ----------------------------------------------------------------------------- systems
FUNCTION_JS = """
const buf = msg.responseBuffer.buffer;
const t = new Date().toISOString();
const readings = new Array(buf.length / 4);
for (let i = 0; i < readings.length; i++) {
    readings[i] = {channel: "v" + String(i).padStart(2, "0"),
                   value: Math.fround(buf.readFloatBE(i * 4))};
}
msg.payload = {device: "plc-1", t: t, readings: readings};
msg.topic = "peer/nodered/plc-1";
return msg;
"""


def node_red_flow(modbus_port: int, broker_port: int, poll_ms: int) -> list[dict[str, Any]]:
    return [
        {"id": "tab1", "type": "tab", "label": "bench"},
        {
            "id": "mbclient",
            "type": "modbus-client",
            "name": "plc",
            "clienttype": "tcp",
            "bufferCommands": True,
            "stateLogEnabled": False,
            "queueLogEnabled": False,
            "failureLogEnabled": True,
            "tcpHost": "127.0.0.1",
            "tcpPort": str(modbus_port),
            "tcpType": "DEFAULT",
            "serialPort": "/dev/null",
            "serialType": "RTU-BUFFERD",
            "serialBaudrate": "9600",
            "serialDatabits": "8",
            "serialStopbits": "1",
            "serialParity": "none",
            "serialConnectionDelay": "100",
            "serialAsciiResponseStartDelimiter": "0x3A",
            "unit_id": "1",
            "commandDelay": "1",
            "clientTimeout": "1000",
            "reconnectOnTimeout": True,
            "reconnectTimeout": "2000",
            "parallelUnitIdsAllowed": True,
        },
        {
            "id": "read1",
            "type": "modbus-read",
            "z": "tab1",
            "name": "poll",
            "topic": "",
            "showStatusActivities": False,
            "logIOActivities": False,
            "showErrors": False,
            "unitid": "1",
            "dataType": "HoldingRegister",
            "adr": "0",
            "quantity": str(READ_REGISTERS),
            "rate": str(poll_ms),
            "rateUnit": "ms",
            "delayOnStart": False,
            "startDelayTime": "",
            "server": "mbclient",
            "useIOFile": False,
            "ioFile": "",
            "useIOForPayload": False,
            "emptyMsgOnFail": False,
            "x": 100,
            "y": 100,
            "wires": [["fn1"], []],
        },
        {
            "id": "fn1",
            "type": "function",
            "z": "tab1",
            "name": "one message per poll",
            "func": FUNCTION_JS,
            "outputs": 1,
            "noerr": 0,
            "x": 300,
            "y": 100,
            "wires": [["mqtt1"]],
        },
        {
            "id": "mqtt1",
            "type": "mqtt out",
            "z": "tab1",
            "name": "",
            "topic": "",
            "qos": "1",
            "retain": "false",
            "broker": "broker1",
            "x": 500,
            "y": 100,
            "wires": [],
        },
        {
            "id": "broker1",
            "type": "mqtt-broker",
            "name": "bench",
            "broker": "127.0.0.1",
            "port": str(broker_port),
            "clientid": "nodered-bench",
            "autoConnect": True,
            "usetls": False,
            "protocolVersion": "4",
            "keepalive": "60",
            "cleansession": True,
        },
    ]


def start_node_red(
    install: Path, work: Path, modbus_port: int, broker_port: int, poll_ms: int
) -> subprocess.Popen[bytes]:
    user_dir = work / "node-red"
    user_dir.mkdir(parents=True, exist_ok=True)
    (user_dir / "flows.json").write_text(
        json.dumps(node_red_flow(modbus_port, broker_port, poll_ms))
    )
    # Best case for Node-RED: no editor, no admin API, no flow credential encryption noise.
    (user_dir / "settings.js").write_text(
        "module.exports = {flowFile: 'flows.json', uiPort: "
        + str(free_port())
        + ", uiHost: '127.0.0.1',\n"
        "  httpAdminRoot: false, httpNodeRoot: false, credentialSecret: false,\n"
        "  logging: {console: {level: 'warn'}}};\n"
    )
    env = dict(os.environ, NODE_PATH=str(install / "node_modules"))
    log = (work / "node-red.log").open("ab")
    return subprocess.Popen(
        [
            *PIN,
            "node",
            str(install / "node_modules" / "node-red" / "red.js"),
            "--userDir",
            str(user_dir),
            "--settings",
            str(user_dir / "settings.js"),
        ],
        cwd=install,
        stdout=log,
        stderr=log,
        env=env,
    )


CHANGING_VALUES: list[bool] = []  # --changing-values given (the server is started per run)
OUTBOX_OVERRIDES: list[str] = []  # `--outbox KEY=VALUE` lines added to [outbox]


def isoedge_config(work: Path, modbus_port: int, broker_port: int, poll_ms: int) -> Path:
    points = "\n".join(
        f'[[devices.points]]\nchannel = "v{i:02d}"\naddress = {2 * i}\n'
        f'data_type = "float32"\nunit = "Pa"\n'
        for i in range(READINGS_PER_POLL)
    )
    path = work / "isoedge.toml"
    path.write_text(
        f"""
[agent]
site = "bench"
id = "peer"
state_dir = "state"
[broker]
url = "mqtt://127.0.0.1:{broker_port}"
[signing]
key_file = "keys/signing.key"
[outbox]
fsync = "full"
{chr(10).join(OUTBOX_OVERRIDES)}
[web]
enabled = false

[[devices]]
id = "plc-1"
type = "modbus_tcp"
host = "127.0.0.1"
port = {modbus_port}
unit_id = 1
poll_interval_s = {poll_ms / 1000}
{points}
"""
    )
    return path


def start_isoedge(
    work: Path, modbus_port: int, broker_port: int, poll_ms: int
) -> subprocess.Popen[bytes]:
    generate_key_files(work / "keys")
    return launch_agent(work, isoedge_config(work, modbus_port, broker_port, poll_ms))


def unit_environment() -> dict[str, str]:
    """The `Environment=` settings of systemd/isoedge.service: the agent runs as installed."""
    unit = (REPO / "systemd" / "isoedge.service").read_text(encoding="utf-8")
    settings = re.findall(r"^Environment=(\w+)=(\S*)$", unit, flags=re.MULTILINE)
    return dict(settings)


def launch_agent(work: Path, config: Path) -> subprocess.Popen[bytes]:
    """`isoedge run -c CONFIG` on the pinned core, logging to WORK/isoedge.log, with the
    environment the systemd unit gives it."""
    env = dict(os.environ, PYTHONPATH=str(REPO)) | unit_environment()
    log = (work / "isoedge.log").open("ab")
    argv = [*PIN, *AGENT_PYTHON, "-m", "agent", "run", "-c", str(config)]
    return subprocess.Popen(argv, cwd=work, stdout=log, stderr=log, env=env)


def measure(
    system: str,
    proc: subprocess.Popen[bytes],
    pid: int,
    counter: Counter,
    *,
    poll_ms: int,
    warmup: float,
    seconds: float,
) -> dict[str, Any]:
    # Wait for the first delivered readings (start-up is not measured), then warm up.
    deadline = time.monotonic() + 60
    while counter.snapshot()[0] == 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{system} delivered nothing (exit {proc.poll()})")
        time.sleep(0.05)
    time.sleep(warmup)
    readings0, messages0 = counter.snapshot()
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    threads0 = thread_cpu(pid)
    spy = None
    if PROFILE.get("out") and system.startswith("isoedge"):
        # The measured window only (no start-up), collapsed stacks for bench/stages.py; the idle
        # agent is sampled more often, or its few busy milliseconds would give too few samples.
        rate = "1000" if system == "isoedge-idle" else "250"
        spy = subprocess.Popen(
            [
                PROFILE["py_spy"],
                "record",
                "--pid",
                str(pid),
                "--nonblocking",
                "-r",
                rate,
                "-f",
                "raw",
                "-d",
                str(max(1, int(seconds))),
                "-o",
                PROFILE["out"],
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    time.sleep(seconds)
    readings1, messages1 = counter.snapshot()
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    threads1 = thread_cpu(pid)
    if spy is not None:
        spy.wait(30)
    wall = t1 - t0
    readings = readings1 - readings0
    ticks = cpu1 - cpu0
    # The threads' exact accounts (a thread that ended within the window would take its own
    # with it: both systems keep theirs for the run; the sampled total is printed beside).
    exact = sum(cpu - threads0.get(name, 0.0) for name, cpu in threads1.items())
    cpu = exact if cpu_clock(pid) == "sched" else ticks
    return {
        "system": system,
        "poll_ms": poll_ms,
        "core": PIN[-1] if PIN else None,
        "window_s": round(wall, 1),
        "readings_per_s": round(readings / wall),
        "messages_per_s": round((messages1 - messages0) / wall),
        "cores": round(cpu / wall, 4),
        "cpu_clock": cpu_clock(pid),
        "cores_by_ticks": round(ticks / wall, 3),
        "readings_per_cpu_s": round(readings / cpu) if cpu > 0 else None,
        "peak_rss_mb": round(peak_rss_mb(pid), 1),
        "thread_cores": {
            name: round((cpu - threads0.get(name, 0.0)) / wall, 3)
            for name, cpu in sorted(threads1.items(), key=lambda kv: -kv[1])[:4]
        },
        "decode_errors": counter.errors,
        "load": load_average(),
    }


def window_s(poll_ms: int, seconds: float) -> float:
    """`seconds`, or 60 polls when that is longer, at most MAX_WINDOW_S."""
    return max(seconds, min(MAX_WINDOW_S, 60 * poll_ms / 1000))


def run_system(
    system: str, install: Path | None, poll_ms: int, warmup: float, seconds: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"peer-{system}-") as tmp:
        work = Path(tmp)
        modbus_port = free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve-modbus",
                str(modbus_port),
                *(["--changing-values"] if CHANGING_VALUES else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=(work / "modbus.log").open("ab"),
        )
        broker = Mosquitto(work / "broker")
        counter: Counter | None = None
        proc: subprocess.Popen[bytes] | None = None
        try:
            wait_port(modbus_port)
            broker.start()
            counter = Counter(broker.port)
            if system == "node-red":
                assert install is not None  # noqa: S101
                proc = start_node_red(install, work, modbus_port, broker.port, poll_ms)
                pid = proc.pid
            else:
                proc = start_isoedge(work, modbus_port, broker.port, poll_ms)
                pid = proc.pid
            try:
                return measure(
                    system,
                    proc,
                    pid,
                    counter,
                    poll_ms=poll_ms,
                    warmup=warmup,
                    seconds=window_s(poll_ms, seconds),
                )
            except RuntimeError:
                for name in ("node-red.log", "isoedge.log"):
                    if (work / name).exists():
                        sys.stderr.write((work / name).read_text()[-3000:])
                raise
        finally:
            if proc is not None:
                stop(proc)
            if counter is not None:
                counter.stop()
            broker.stop()
            stop(server)


# ------------------------------------------------------------------ the agent idle at a site
def toml_text(data: dict[str, Any]) -> str:
    """Parsed TOML back to text (tables, arrays of tables, inline values): enough for a config."""
    lines: list[str] = []
    _toml_table(data, [], lines)
    return "\n".join(lines) + "\n"


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_inline(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml_inline(v) for v in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{_toml_key(k)} = {_toml_inline(v)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    raise TypeError(f"no TOML for {value!r}")


def _toml_table(data: dict[str, Any], path: list[str], lines: list[str]) -> None:
    tables: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict) or (
            isinstance(value, list) and value and all(isinstance(v, dict) for v in value)
        ):
            tables.append((key, value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_inline(value)}")
    for key, value in tables:
        name = ".".join([*path, _toml_key(key)])
        for item in value if isinstance(value, list) else [value]:
            lines += ["", f"[[{name}]]" if isinstance(value, list) else f"[{name}]"]
            _toml_table(item, [*path, _toml_key(key)], lines)


async def serve_demo_simulators(out: Path) -> None:
    """Start the demo's simulators as `isoedge demo` does; write the wired devices to OUT."""
    from agent.tools.demo import SIMULATOR_STARTERS  # noqa: PLC0415

    text = await asyncio.to_thread(DEMO_CONFIG.read_text, encoding="utf-8")
    data = tomllib.loads(text)
    devices = {d["id"]: d for d in data["devices"]}
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    stops = []
    try:
        for sim in data["demo"]["simulators"]:
            starter = SIMULATOR_STARTERS[sim["kind"]]
            stops.append(await starter(sim.get("options", {}), devices[sim["device"]]))
        partial = out.with_suffix(".partial")
        await asyncio.to_thread(partial.write_text, json.dumps(data["devices"]))
        await asyncio.to_thread(partial.replace, out)
        await stop.wait()
    finally:
        for stop_fn in reversed(stops):
            with contextlib.suppress(Exception):
                await stop_fn()


def idle_config(work: Path, devices: list[dict[str, Any]], broker_port: int) -> Path:
    """config/demo.toml pointed at the simulators, every instrument at 1 Hz."""
    data = tomllib.loads(DEMO_CONFIG.read_text(encoding="utf-8"))
    data.pop("demo", None)
    data["agent"]["state_dir"] = str(work / "state")
    data["broker"]["url"] = f"mqtt://127.0.0.1:{broker_port}"
    data["signing"]["key_file"] = str(work / "keys" / PRIVATE_KEY_NAME)
    data["web"]["listen"] = f"127.0.0.1:{free_port()}"
    for line in OUTBOX_OVERRIDES:  # --outbox applies here too
        key, _, value = line.partition("=")
        data.setdefault("outbox", {}).update(tomllib.loads(f"{key.strip()} = {value.strip()}"))
    for device in devices:
        if "poll_interval_s" in device:
            device["poll_interval_s"] = 1.0
        if device["type"] == "opcua":
            device["publishing_interval_ms"] = 1000
    kept = {device["id"] for device in devices}
    if kept != {device["id"] for device in data["devices"]}:
        # Instruments left out (--idle-devices): their rules, QC and records go with them.
        data["rules"] = [r for r in data["rules"] if r.get("device") in {None, *kept}]
        data["qc"]["calibrators"] = [c for c in data["qc"]["calibrators"] if c["device"] in kept]
        data.pop("records", None)
    data["devices"] = devices
    path = work / "isoedge.toml"
    path.write_text(toml_text(data), encoding="utf-8")
    return path


def run_idle(warmup: float, seconds: float, only: list[str] | None = None) -> dict[str, Any]:
    """The agent with the demo's five instruments at 1 Hz: its CPU, not the simulators'.

    `only`: the ids of the instruments to keep (to see what each one costs).
    """
    with tempfile.TemporaryDirectory(prefix="peer-idle-") as tmp:
        work = Path(tmp)
        wiring = work / "devices.json"
        simulators = subprocess.Popen(
            [sys.executable, __file__, "--serve-demo", str(wiring)],
            stdout=subprocess.DEVNULL,
            stderr=(work / "simulators.log").open("ab"),
        )
        broker = Mosquitto(work / "broker")
        counter: Counter | None = None
        proc: subprocess.Popen[bytes] | None = None
        try:
            deadline = time.monotonic() + 60
            while not wiring.exists():
                if simulators.poll() is not None or time.monotonic() > deadline:
                    sys.stderr.write((work / "simulators.log").read_text()[-3000:])
                    raise RuntimeError("the demo's simulators did not start")
                time.sleep(0.1)
            devices = [d for d in json.loads(wiring.read_text()) if only is None or d["id"] in only]
            broker.start()
            counter = Counter(broker.port)
            generate_key_files(work / "keys")
            proc = launch_agent(work, idle_config(work, devices, broker.port))
            try:
                result = measure(
                    "isoedge-idle",
                    proc,
                    proc.pid,
                    counter,
                    poll_ms=1000,
                    warmup=warmup,
                    seconds=seconds,
                )
            except RuntimeError:
                sys.stderr.write((work / "isoedge.log").read_text()[-3000:])
                raise
            result["devices"] = len(devices)
            result["cpu_pct_of_one_core"] = round(100 * result["cores"], 2)
            return result
        finally:
            if proc is not None:
                stop(proc)
            if counter is not None:
                counter.stop()
            broker.stop()
            stop(simulators)


def pin(core: int | None) -> None:
    """The systems measured on CORE (default: the last allowed); everything else elsewhere."""
    if shutil.which("taskset") is None:
        sys.exit("taskset is needed: apt-get install util-linux")
    allowed = sorted(os.sched_getaffinity(0))
    chosen = allowed[-1] if core is None else core
    PIN[:] = ["taskset", "-c", str(chosen)]
    others = set(allowed) - {chosen}
    if others:  # this process and its helpers (server, broker, subscriber) keep off that core
        os.sched_setaffinity(0, others)
    print(json.dumps({"system_core": chosen, "helper_cores": sorted(others)}), flush=True)


def _configure(args: argparse.Namespace) -> None:
    """The options that shape every run: outbox overrides, profiling, changing values."""
    OUTBOX_OVERRIDES.extend(args.outbox)
    if args.profile:
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        PROFILE.update(py_spy=py_spy, out=str(Path(args.profile).resolve()))
    if args.changing_values:
        CHANGING_VALUES.append(True)


def _serve_child(args: argparse.Namespace) -> bool:
    """Run as one of the bench's own servers (a child process) if asked to; True if so."""
    if args.serve_modbus:
        serve_modbus(args.serve_modbus, changing=args.changing_values)
        return True
    if args.serve_demo:
        asyncio.run(serve_demo_simulators(args.serve_demo))
        return True
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--polls",
        type=int,
        nargs="*",
        default=[1000, 100, 20, 5, 1],
        help="poll intervals in ms (default: 1000 100 20 5 1; none: only the "
        "idle line, with --only isoedge)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=15.0,
        help="measured window per run (at least 60 polls, at most 60 s)",
    )
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument(
        "--core", type=int, help="core the system measured is pinned to (default: the last one)"
    )
    parser.add_argument(
        "--no-idle",
        action="store_true",
        help="skip the agent idle with the demo's five instruments at 1 Hz",
    )
    parser.add_argument(
        "--idle-devices",
        nargs="*",
        metavar="ID",
        help="the idle line with only these of the demo's instruments (what each"
        " one costs); an empty list: the agent with none",
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=60.0,
        help="measured window of the idle line (after a 10 s warm-up)",
    )
    parser.add_argument("--only", choices=["node-red", "isoedge"])
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="py-spy the agent during the window: collapsed stacks to FILE "
        "(summarise with bench/stages.py)",
    )
    parser.add_argument(
        "--outbox",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="extra [outbox] setting of the agent, e.g. commit_interval_ms=20",
    )
    parser.add_argument(
        "--agent-python",
        metavar="PYTHON",
        help="interpreter for `isoedge run` (default: a venv of the runtime "
        "dependencies only, made in the scratch directory)",
    )
    parser.add_argument(
        "--changing-values",
        action="store_true",
        help="the server's values change every 0.5 ms (arbitrary float32s, as "
        "a live sensor gives); default: values that repeat from poll to poll",
    )
    parser.add_argument("--serve-modbus", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-demo", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if _serve_child(args):
        return
    _configure(args)
    pin(args.core)
    systems = [args.only] if args.only else ["node-red", "isoedge"]
    if "isoedge" in systems:
        AGENT_PYTHON[:] = [args.agent_python or str(ensure_agent_venv())]
        print(json.dumps({"agent_python": AGENT_PYTHON[0]}), flush=True)
    install = ensure_node_red() if "node-red" in systems else None
    if install is not None:
        print(json.dumps({"versions": versions(install)}), flush=True)
    for poll_ms in args.polls:
        results = {}
        for system in systems:
            results[system] = run_system(system, install, poll_ms, args.warmup, args.seconds)
            print(json.dumps(results[system]), flush=True)
        if len(results) == 2:
            red, iso = (
                results["node-red"]["readings_per_cpu_s"],
                results["isoedge"]["readings_per_cpu_s"],
            )
            print(
                json.dumps(
                    {
                        "poll_ms": poll_ms,
                        "ratio_readings_per_cpu_s": round(iso / red, 2) if red and iso else None,
                        "rss_ratio": round(
                            results["isoedge"]["peak_rss_mb"] / results["node-red"]["peak_rss_mb"],
                            2,
                        ),
                    }
                ),
                flush=True,
            )

    if "isoedge" in systems and not args.no_idle:
        print(json.dumps(run_idle(10.0, args.idle_seconds, args.idle_devices)), flush=True)


if __name__ == "__main__":
    main()
