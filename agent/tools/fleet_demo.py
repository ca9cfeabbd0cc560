"""`isoedge demo --fleet`: three sites' agents, broker, PostgreSQL, two ingests, fleet page.

The two ingest processes share one MQTT share group; the first also serves the fleet page.

Everything runs as real processes on loopback ports: mosquitto, PostgreSQL (Debian binaries,
initdb under the state directory's temporary cluster), `isoedge run` per agent (synthetic
devices), `isoedge ingest run` twice (the first serves the fleet page on `--web`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from agent.delivery.signing import PRIVATE_KEY_NAME, PUBLIC_JWK_NAME, generate_key_files
from agent.tools.mosquitto import Mosquitto
from central.pgserver import PostgresServer

SITES = [
    ("anchor-centre", "edge-1", "Anchor Centre hot lab"),
    ("north-region", "edge-1", "North regional centre"),
    ("south-region", "edge-1", "South regional centre"),
]

AGENT_TEMPLATE = """
[agent]
site = "{site}"
id = "{agent}"
state_dir = "{state}"

[broker]
url = "{broker}"
reconnect_initial_s = 0.5
reconnect_max_s = 5.0

[signing]
key_file = "{key}"

[web]
enabled = false

[outbox]
archive_days = 7
archive_mb = 16

[replay]
trusted_keys = ["{ingest_jwk}"]

[[devices]]
id = "area-1"
type = "synthetic"
description = "{label}: dispensing area monitor"
channels = ["dose_rate"]
unit = "uSv/h"
base = 0.3
amplitude = 0.05
poll_interval_s = 0.5

[[devices]]
id = "hotcell-1"
type = "synthetic"
description = "{label}: hot cell pressure"
channels = ["pressure"]
unit = "Pa"
base = -45.0
amplitude = 3.0
poll_interval_s = 1.0
"""


def _ingest_config(path: Path, broker: str, db: str, agents: list[tuple[str, str, Path]],
                   web: str | None) -> Path:
    lines = [f'[broker]\nurl = "{broker}"\ngroup = "fleet-demo"\n',
             f'[database]\nurl = "{db}"\n',
             "[repair]\ncheck_interval_s = 2\ngrace_s = 10\nretry_s = 15\n",
             f'[signing]\nkey_file = "{_ingest_keys(path.parent) / PRIVATE_KEY_NAME}"\n']
    if web:
        lines.append(f'[web]\nenabled = true\nlisten = "{web}"\n')
    lines += [f'[[agents]]\nsite = "{s}"\nagent = "{a}"\npublic_keys = ["{k}"]\n'
              for s, a, k in agents]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _ingest_keys(state: Path) -> Path:
    """The ingests' own key pair (signs replay requests; every agent trusts its public JWK)."""
    keys = state / "ingest-keys"
    if not (keys / PRIVATE_KEY_NAME).exists():
        generate_key_files(keys)
    return keys


def _write_agents(state: Path, broker_url: str) -> list[tuple[str, str, Path, Path]]:
    """(site, agent, public JWK, config) of each simulated site, keys made once."""
    out = []
    for site, agent, label in SITES:
        home = state / site
        keys = home / "keys"
        if not (keys / PRIVATE_KEY_NAME).exists():
            generate_key_files(keys)
        config = home / "agent.toml"
        config.write_text(AGENT_TEMPLATE.format(
            site=site, agent=agent, label=label, state=home / "state", broker=broker_url,
            key=keys / PRIVATE_KEY_NAME, ingest_jwk=_ingest_keys(state) / PUBLIC_JWK_NAME),
            encoding="utf-8")
        out.append((site, agent, keys / PUBLIC_JWK_NAME, config))
    return out


def _report(config: Path) -> list[dict[str, Any]] | None:
    """The ingest's completeness report per agent, or None (its error written to stderr)."""
    report = subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "agent", "ingest", "report", "-c", str(config), "--json"],
        capture_output=True, text=True, check=False, timeout=60)
    if report.returncode != 0:
        sys.stderr.write(report.stderr)
        return None
    agents: list[dict[str, Any]] = json.loads(report.stdout)["agents"]
    return agents


def _wait_until_complete(config: Path, timeout_s: float) -> None:
    """Until every agent's stored record has no gap (the agents have stopped), or the timeout.

    The report is the only view of what the ingests have committed, so it is asked again each
    second; envelopes the broker accepted from an agent reach an ingest after the agent exits.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        agents = _report(config)
        if agents is not None and all(not entry["gaps"] for entry in agents):
            return
        time.sleep(1.0)


def _print_report(config: Path) -> None:
    agents = _report(config)
    if agents is None:
        return
    for entry in agents:
        sys.stdout.write(
            f"  {entry['site']}/{entry['agent']}: seq {entry['first_seq']}.."
            f"{entry['last_seq']}, {entry['readings']} readings, gaps {entry['gaps']},"
            f" chain {entry['chain']}\n")


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in reversed(procs):
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


def run_fleet_demo(args: argparse.Namespace) -> int:
    """Entry point of `isoedge demo --fleet`."""
    state = Path(args.state_dir).resolve() / "fleet"
    state.mkdir(parents=True, exist_ok=True)
    web = args.web if args.web != "127.0.0.1:8088" else "127.0.0.1:8090"
    try:
        import psycopg  # noqa: F401, PLC0415 - the optional `central` extra
    except ImportError:
        sys.stderr.write("the fleet demo needs the PostgreSQL driver: "
                         "pip install 'isoedge[central]'\n")
        return 1
    try:
        pg = PostgresServer()
    except RuntimeError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    broker = Mosquitto(state / "broker", persistent=True)
    procs: list[subprocess.Popen[bytes]] = []
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        broker.start()
        pg.start()
        written = _write_agents(state, broker.url)
        agents = [(site, agent, jwk) for site, agent, jwk, _c in written]
        ingest_configs = [
            _ingest_config(state / "ingest-1.toml", broker.url, pg.url, agents, web),
            _ingest_config(state / "ingest-2.toml", broker.url, pg.url, agents, None),
        ]
        logs = state / "logs"
        logs.mkdir(exist_ok=True)

        def spawn(name: str, *argv: str) -> None:
            with (logs / f"{name}.log").open("ab") as log:
                procs.append(subprocess.Popen(  # noqa: S603 - our own CLI
                    [sys.executable, "-m", "agent", *argv], stdout=log, stderr=log))

        for i, config in enumerate(ingest_configs, 1):
            spawn(f"ingest-{i}", "ingest", "run", "-c", str(config))
        for site, _agent, _jwk, config in written:
            spawn(f"agent-{site}", "run", "-c", str(config))
        sys.stdout.write(
            "IsoEdge fleet demo\n"
            f"  broker      {broker.url}  (topics isoedge/v1/+/+/#)\n"
            f"  database    {pg.url}\n"
            f"  fleet page  http://{web}/\n"
            f"  agents      {', '.join(f'{s}/{a}' for s, a, _k in agents)}\n"
            f"  ingests     2 processes, share group fleet-demo\n"
            f"  report      isoedge ingest report -c {ingest_configs[0]}\n"
            f"  logs        {logs}\n"
            "Ctrl-C stops everything.\n"
        )
        sys.stdout.flush()
        stop.wait(args.duration)
        # Agents first: each publishes what it still holds as it stops, and the ingests store
        # it before they stop in turn, so the closing report shows the whole record.
        agent_procs = procs[len(ingest_configs):]
        _stop_all(agent_procs)
        sys.stdout.write("agents stopped; waiting for the ingests to store their last envelopes\n")
        sys.stdout.flush()
        _wait_until_complete(ingest_configs[0], timeout_s=30.0)
        _stop_all(procs)
        _print_report(ingest_configs[0])
    finally:
        _stop_all(procs)
        broker.stop()
        pg.destroy()
    return 0
