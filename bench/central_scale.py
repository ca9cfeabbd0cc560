"""The national record at scale: fill PostgreSQL through the real ingest, measure as it grows.

Synthetic agents (real Ed25519 JWS, seq and hash chain, tests/central/synth.py) publish over
mosquitto to one `isoedge ingest run` process that verifies and stores every envelope and serves
the fleet page. The record is filled in chunks; each chunk is signed first (so signing does not
compete with the ingest for the cores) and then timed from its first publish until PostgreSQL
holds all of it. At each checkpoint (1, 5, 10, 20 M readings by default, and `--readings`) it
prints one JSON line:

* `ingest_readings_per_s`: readings stored per second over the chunks up to the checkpoint;
* `report_ms` / `fleet_ms`: p50 and p95 of the completeness report (`ingest report`'s query,
  central.completeness.report) and of `GET /api/fleet` over HTTP, `--samples` calls each;
* `bytes_per_reading`: the database's size on disk (every table and index of the record,
  the evidence included) over the readings stored; `evidence_bytes_per_reading` the part of it
  the compressed signed envelopes take.

    .venv/bin/python bench/central_scale.py                       # to 20 M readings
    .venv/bin/python bench/central_scale.py --readings 1000000    # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "central"))

import psycopg  # noqa: E402
from synth import Publisher, SynthAgent  # noqa: E402

from agent.tools.mosquitto import Mosquitto  # noqa: E402
from central.completeness import report  # noqa: E402
from central.pgserver import PostgresServer  # noqa: E402
from central.schema import SCHEMA_VERSION  # noqa: E402

CHECKPOINTS = (1_000_000, 5_000_000, 10_000_000, 20_000_000)
CHUNK_ENVELOPES = 1_000  # signed ahead, then published and timed


def free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stored_envelopes(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT coalesce(sum(envelopes), 0) FROM agent_record").fetchone()
        return int(row[0]) if row else 0


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": round(statistics.median(ordered) * 1000, 1), "p95": round(p95 * 1000, 1)}


def measure(url: str, fleet_url: str, samples: int) -> dict[str, object]:
    report_s: list[float] = []
    with psycopg.connect(url) as conn:
        conn.autocommit = True
        for _ in range(samples):
            t0 = time.perf_counter()
            report(conn)
            report_s.append(time.perf_counter() - t0)
        sizes = conn.execute(
            "SELECT sum(pg_total_relation_size(c.oid)) FILTER (WHERE c.relname <> 'evidence'),"
            " sum(pg_total_relation_size(c.oid)) FILTER (WHERE c.relname = 'evidence')"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'm')"
        ).fetchone()
        readings = conn.execute("SELECT coalesce(sum(readings), 0) FROM agent_record").fetchone()
    fleet_s: list[float] = []
    for _ in range(samples):
        t0 = time.perf_counter()
        with urllib.request.urlopen(fleet_url, timeout=120) as response:  # noqa: S310 - loopback
            response.read()
        fleet_s.append(time.perf_counter() - t0)
    n = int(readings[0]) if readings else 0
    other, evidence = (int(x or 0) for x in sizes) if sizes else (0, 0)
    return {
        "readings": n,
        "report_ms": percentiles(report_s),
        "fleet_ms": percentiles(fleet_s),
        "bytes_per_reading": round((other + evidence) / max(n, 1), 1),
        "evidence_bytes_per_reading": round(evidence / max(n, 1), 1),
    }


def run(args: argparse.Namespace, work: Path) -> None:
    broker = Mosquitto(work / "mosq")
    broker.start()
    pg = PostgresServer()
    pg.start()
    web = f"127.0.0.1:{free_port()}"
    proc: subprocess.Popen[bytes] | None = None
    try:
        agents = [SynthAgent(f"site{i % 7}", f"edge{i:02d}", work / f"keys-{i}")
                  for i in range(args.agents)]
        config = work / "ingest.toml"
        config.write_text(
            f'[broker]\nurl = "{broker.url}"\ngroup = "scale"\n'
            f'[database]\nurl = "{pg.url}"\n'
            f"[repair]\ncheck_interval_s = 5\ngrace_s = 600\n"
            f'[web]\nenabled = true\nlisten = "{web}"\n'
            + "".join(f'[[agents]]\nsite = "{a.site}"\nagent = "{a.agent}"\n'
                      f'public_keys = ["{a.jwk_path}"]\n' for a in agents)
        )
        log = (work / "ingest.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "agent", "ingest", "run", "-c",
                                 str(config), "--log-level", "warning"], stdout=log, stderr=log,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        publisher = Publisher(broker.port)
        for a in agents:
            publisher.publish(f"isoedge/v1/{a.site}/{a.agent}/status",
                              json.dumps({"state": "online", "last_seq": 0}).encode(), retain=True)
        _wait(lambda: _fleet_up(f"http://{web}/healthz"), 120)
        checkpoints = sorted({c for c in CHECKPOINTS if c < args.readings} | {args.readings})
        stored = sent = 0
        busy = 0.0
        for checkpoint in checkpoints:
            while stored < checkpoint:
                n = min(CHUNK_ENVELOPES, -(-(checkpoint - stored) // args.items))
                bodies = [agents[(sent + i) % len(agents)].envelope(n_items=args.items)
                          for i in range(n)]
                t0 = time.monotonic()
                for topic, body in bodies:
                    publisher.publish(topic, body)
                sent += n
                _wait(lambda target=sent: stored_envelopes(pg.url) >= target, 600, interval=0.05)
                busy += time.monotonic() - t0
                publisher.wait_acked(60)
                stored += n * args.items
            result = measure(pg.url, f"http://{web}/api/fleet", args.samples)
            result["ingest_readings_per_s"] = round(stored / busy)
            result["load_avg_1m"] = round(os.getloadavg()[0], 2)
            print(json.dumps(result))
            sys.stdout.flush()
        publisher.close()
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        broker.stop()
        pg.destroy()


def _fleet_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except OSError:
        return False


def _wait(predicate: object, timeout: float, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise TimeoutError("bench condition not met")


def _stop(_signum: int, _frame: object) -> None:
    sys.exit(143)  # SystemExit: the `finally` above stops the ingest, broker and database


def main() -> None:
    # Stoppable however it was started (a background job ignores SIGINT): cleans up either way.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=20_000_000, help="fill to this many")
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--items", type=int, default=100, help="readings per envelope")
    parser.add_argument("--samples", type=int, default=20, help="latency samples per figure")
    args = parser.parse_args()
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False).stdout.strip()
    print(json.dumps({"commit": head or None, "schema": SCHEMA_VERSION, "agents": args.agents,
                      "readings_per_envelope": args.items, "target": args.readings}))
    sys.stdout.flush()
    with tempfile.TemporaryDirectory(prefix="isoedge-bench-scale-") as tmp:
        run(args, Path(tmp))


if __name__ == "__main__":
    main()
