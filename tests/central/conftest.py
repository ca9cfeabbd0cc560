"""Fixtures of the ingest tests: a real PostgreSQL (Debian binaries, initdb in a temp dir, run
as an unprivileged user on a free port) and `isoedge ingest run` subprocesses."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from central.pgserver import PostgresServer


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.destroy()
