"""Fixtures of the security tests: the console tests' helpers (real agent, HTTP), the ingest
helpers (tests/central) and a real PostgreSQL."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "console"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "central"))

from central.pgserver import PostgresServer


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.destroy()
