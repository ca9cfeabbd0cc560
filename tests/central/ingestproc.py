"""`isoedge ingest run -c CONFIG` as a subprocess, and the configuration the tests write."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
from pathlib import Path
from typing import Any

import psycopg
from helpers import cli_env, isoedge_cmd

from agent.delivery.signing import PRIVATE_KEY_NAME, PUBLIC_JWK_NAME, generate_key_files


def ingest_key(directory: Path) -> Path:
    """The ingest's own key pair in `directory/ingest-keys` (made once); its public JWK."""
    keys = directory / "ingest-keys"
    if not (keys / PRIVATE_KEY_NAME).exists():
        generate_key_files(keys)
    return keys / PUBLIC_JWK_NAME


def trust_ingest(directory: Path) -> str:
    """An agent's `[replay]` section trusting the ingest key of `directory`."""
    return f"[replay]\ntrusted_keys = [{json.dumps(str(ingest_key(directory)))}]\n"


def write_ingest_config(path: Path, broker_url: str, db_url: str,
                        agents: list[tuple[str, str, list[Path]]], *, group: str | None = None,
                        extra: str = "", zones: dict[str, str] | None = None) -> Path:
    # A group of its own per configuration: an ingest's client id comes from the first free
    # instance slot of its group on this host, and tests running side by side (xdist) must not
    # take each other's slots, or a restarted ingest would not resume its own session.
    group = group or f"ingest-{secrets.token_hex(4)}"
    blocks = "".join(
        f'\n[[agents]]\nsite = "{site}"\nagent = "{agent}"\n'
        f"public_keys = {json.dumps([str(k) for k in keys])}\n"
        + (f'zone = "{zones[site]}"\n' if zones and site in zones else "")
        for site, agent, keys in agents
    )
    key = ingest_key(path.parent).parent / PRIVATE_KEY_NAME
    path.write_text(
        f'[broker]\nurl = "{broker_url}"\ngroup = "{group}"\n\n'
        f"[signing]\nkey_file = {json.dumps(str(key))}\n\n"
        f'[database]\nurl = "{db_url}"\nbatch_max_age_ms = 20\nretry_initial_s = 0.2\n'
        f"retry_max_s = 1.0\n\n{extra}\n{blocks}"
    )
    return path


class IngestProcess:
    def __init__(self, config: Path, name: str = "ingest") -> None:
        self.config = config
        self.log_path = config.parent / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> IngestProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(isoedge_cmd("ingest", "run", "-c", str(self.config)),
                                         stdout=log, stderr=log, env=cli_env())
        return self

    def terminate(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop_quietly(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def report(config: Path) -> dict[str, Any]:
    out = subprocess.run(isoedge_cmd("ingest", "report", "-c", str(config), "--json"),
                         capture_output=True, text=True, env=cli_env(), check=True)
    return dict(json.loads(out.stdout))


def query(db_url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return list(conn.execute(sql, params).fetchall())


def count_envelopes(db_url: str) -> int:
    try:
        return int(query(db_url, "SELECT count(*) FROM envelopes")[0][0])
    except psycopg.errors.UndefinedTable:
        return 0


def final_stats(proc: IngestProcess) -> dict[str, Any]:
    """The counters an ingest logs when it stops after SIGTERM."""
    for line in reversed(proc.log().splitlines()):
        if '"ingest stopped"' in line:
            return dict(json.loads(line))
    raise AssertionError(f"no final stats in {proc.log_path}")


def rebuild_check(config: Path) -> subprocess.CompletedProcess[str]:
    """`isoedge ingest rebuild-completeness --check`: the maintained completeness against a
    recomputation from the whole record (exit 0: they agree)."""
    return subprocess.run(
        isoedge_cmd("ingest", "rebuild-completeness", "-c", str(config), "--check"),
        capture_output=True, text=True, env=cli_env(), check=False, timeout=120)
