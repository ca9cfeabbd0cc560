"""Ingest bench: 20 synthetic agents → mosquitto → 1 and 2 `isoedge ingest run` → PostgreSQL.

Every envelope is a real Ed25519 JWS with seq and hash chain; the ingest verifies each one with
joserfc before storing it. Two phases per process count:

* throughput: the envelopes are signed beforehand (so signing does not compete with the ingest
  for the 2 cores), published as fast as the broker takes them, and timed from the first
  publish until PostgreSQL holds every one of them (checked by count, then gaps and chain in SQL);
* latency: envelopes signed live at a fixed rate; latency = `received` (the ingest transaction's
  start, PostgreSQL clock) minus `created` (the agent's clock, the same host here).

CPU is user+system time from /proc of each ingest process, mosquitto and all PostgreSQL
processes over the throughput window, as % of one core.

    .venv/bin/python bench/ingest.py                     # 1 and 2 processes
    .venv/bin/python bench/ingest.py --processes 1 --envelopes 50
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "central"))

import psycopg  # noqa: E402
from synth import Publisher, SynthAgent  # noqa: E402

from agent.tools.mosquitto import Mosquitto  # noqa: E402
from central.pgserver import PostgresServer  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def postgres_pids(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid and b"postgres" in (entry / "comm").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def count(db_url: str) -> tuple[int, int]:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM envelopes), (SELECT count(*) FROM reading_rows)"
        ).fetchone()
        if row is None:
            raise RuntimeError("count query returned nothing")
        return int(row[0]), int(row[1])


def run_case(n_proc: int, args: argparse.Namespace, work: Path) -> dict[str, object]:  # noqa: PLR0915
    broker = Mosquitto(work / f"mosq-{n_proc}")
    broker.start()
    pg = PostgresServer()
    pg.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        agents = [SynthAgent(f"site{i % 7}", f"edge{i:02d}", work / f"keys-{n_proc}-{i}")
                  for i in range(args.agents)]
        config = work / f"ingest-{n_proc}.toml"
        config.write_text(
            f'[broker]\nurl = "{broker.url}"\ngroup = "bench"\n'
            f'[database]\nurl = "{pg.url}"\n[repair]\ncheck_interval_s = 2\ngrace_s = 600\n'
            + "".join(f'[[agents]]\nsite = "{a.site}"\nagent = "{a.agent}"\n'
                      f'public_keys = ["{a.jwk_path}"]\n' for a in agents)
        )
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        for i in range(n_proc):
            log = (work / f"ingest-{n_proc}-{i}.log").open("wb")
            procs.append(subprocess.Popen([sys.executable, "-m", "agent", "ingest", "run", "-c",
                                           str(config), "--log-level", "warning"],
                                          stdout=log, stderr=log, env=env))
        publisher = Publisher(broker.port)
        # Ready: each process has subscribed once its retained-status subscription delivered.
        publisher.publish(f"isoedge/v1/{agents[0].site}/{agents[0].agent}/status",
                          b'{"state":"online"}', retain=True)
        _wait(lambda: _status_rows(pg.url) > 0, 60)
        time.sleep(1.0)  # the other process's SUBSCRIBE may trail by a moment
        # ---- throughput
        bodies = [a.envelope(n_items=args.items) for _ in range(args.envelopes) for a in agents]
        total_env = len(bodies)
        total_readings = total_env * args.items
        ingest_pids = [p.pid for p in procs]
        pg_uid = pg.owner.pw_uid if pg.owner else os.getuid()
        cpu0 = {"ingest": [cpu_seconds([p]) for p in ingest_pids],
                "mosquitto": cpu_seconds([broker.proc.pid]) if broker.proc else 0.0,
                "postgres": cpu_seconds(postgres_pids(pg_uid))}
        t0 = time.monotonic()
        for topic, body in bodies:
            publisher.publish(topic, body)
        _wait(lambda: count(pg.url)[0] >= total_env, 600, interval=0.1)
        elapsed = time.monotonic() - t0
        ingest_cpu = [cpu_seconds([p]) - c for p, c in zip(ingest_pids, cpu0["ingest"],
                                                            strict=True)]
        pg_cpu = cpu_seconds(postgres_pids(pg_uid)) - cpu0["postgres"]
        cpu = {
            # Noise-resistant figures on a shared machine: CPU time per 100 000 readings.
            "ingest_cpu_s_per_100k": round(sum(ingest_cpu) * 100_000 / total_readings, 2),
            "postgres_cpu_s_per_100k": round(pg_cpu * 100_000 / total_readings, 2),
            "ingest_pct": [round(100 * c / elapsed, 1) for c in ingest_cpu],
            "mosquitto_pct": round(100 * (cpu_seconds([broker.proc.pid]) - cpu0["mosquitto"])
                                   / elapsed, 1) if broker.proc else None,
            "postgres_pct": round(100 * pg_cpu / elapsed, 1),
        }
        publisher.wait_acked(60)
        envs, readings = count(pg.url)
        with psycopg.connect(pg.url) as conn:
            gaps = conn.execute(
                "SELECT count(*) FROM (SELECT seq - lag(seq, 1, 0::bigint) OVER"
                " (PARTITION BY site, agent ORDER BY seq) AS d FROM envelopes) s WHERE d <> 1"
            ).fetchone()
            broken = conn.execute(
                "SELECT count(*) FROM envelopes e JOIN envelopes p ON p.site = e.site AND"
                " p.agent = e.agent AND p.seq = e.seq - 1 WHERE e.prev <> p.payload_sha256"
            ).fetchone()
        # ---- latency at a fixed rate, envelopes signed live
        per_s = args.latency_rate / args.items
        lat_t0 = time.time()
        start = time.monotonic()
        sent = 0
        while time.monotonic() - start < args.latency_s:
            agent = agents[sent % len(agents)]
            publisher.publish(*agent.envelope(n_items=args.items))
            sent += 1
            delay = start + sent / per_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        _wait(lambda: count(pg.url)[0] >= total_env + sent, 120, interval=0.1)
        with psycopg.connect(pg.url) as conn:
            lat = conn.execute(
                "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY"
                " extract(epoch FROM received - created)), max(extract(epoch FROM"
                " received - created)) FROM envelopes WHERE created >= to_timestamp(%s)",
                (lat_t0,),
            ).fetchone()
        if lat is None:
            raise RuntimeError("latency query returned nothing")
        envs, readings = count(pg.url)
        publisher.close()
        return {
            "processes": n_proc,
            "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
            "agents": args.agents,
            "readings_per_envelope": args.items,
            "envelopes": envs,
            "readings_stored": readings,
            "readings_expected": total_readings + sent * args.items,
            "gaps": int(gaps[0]) if gaps else None,
            "chain_breaks": int(broken[0]) if broken else None,
            "throughput_s": round(elapsed, 2),
            "readings_per_s": round(total_readings / elapsed),
            "latency_rate_readings_per_s": args.latency_rate,
            "latency_p50_ms": round(float(lat[0][0]) * 1000, 1),
            "latency_p99_ms": round(float(lat[0][1]) * 1000, 1),
            "latency_max_ms": round(float(lat[1]) * 1000, 1),
            "cpu": cpu,
        }
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        broker.stop()
        pg.destroy()


def _status_rows(url: str) -> int:
    try:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM agent_status").fetchone()
            return int(row[0]) if row else 0
    except psycopg.Error:
        return 0


def _wait(predicate: object, timeout: float, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise TimeoutError("bench condition not met")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--envelopes", type=int, default=150, help="per agent (throughput)")
    parser.add_argument("--items", type=int, default=100, help="readings per envelope")
    parser.add_argument("--latency-rate", type=float, default=10_000, help="readings/s")
    parser.add_argument("--latency-s", type=float, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="isoedge-bench-ingest-") as tmp:
        for n in args.processes:
            result = run_case(n, args, Path(tmp))
            print(json.dumps(result))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
