"""The ingest tests import their helpers (ingestproc, synth) from this folder; the real
PostgreSQL fixture `postgres` is suite-wide (tests/conftest.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
