"""Fixtures of the security tests: the console tests' helpers (real agent, HTTP), the ingest
helpers (tests/central) and a real PostgreSQL."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "console"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "central"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from agentrig import Rig
from ingest_rig import Rig as CentralRig
from ingest_rig import make_rig
from ingestrig import Rig as IngestRig


@pytest.fixture
def rig(tmp_path, mosquitto):
    """`rig(replay_toml)`: a running agent trusting one ingest key (tests/security/agentrig.py)."""
    made: list[Rig] = []

    def make(replay: str = "") -> Rig:
        made.append(Rig(tmp_path, mosquitto, replay))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def ingest_rig(tmp_path, mosquitto, postgres):
    """A running ingest with one registered synthetic agent (tests/security/ingestrig.py)."""
    made = IngestRig(tmp_path, mosquitto, postgres)
    yield made
    made.close()


@pytest.fixture
def central_rig(tmp_path, mosquitto, postgres) -> Iterator[CentralRig]:
    """A running ingest with its fleet page, one registered synthetic agent and a paho client
    (tests/security/ingest_rig.py), ready: subscribed and serving."""
    made = make_rig(tmp_path, mosquitto, postgres)
    try:
        made.wait_ready()
        yield made
    finally:
        made.publisher.close()
        for proc in (made.ingest, *made.extra_procs):
            proc.stop_quietly()
