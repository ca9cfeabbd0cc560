"""The security tests drive the console with the console tests' helpers (real agent, HTTP)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "console"))
