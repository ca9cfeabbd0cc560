"""Memory and time to start: import the runtime and load a one-device configuration.

    .venv/bin/python bench/startup_memory.py [CONFIG]

Prints the peak RSS, the time taken, and which heavy libraries were imported. With only a
synthetic device, no protocol library (asyncua, pymodbus) may load: the driver registry
imports configuration models eagerly and driver classes on first use.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """
[agent]
site = "bench"
id = "startup"

[[devices]]
id = "synthetic-1"
type = "synthetic"
"""

HEAVY = ("asyncua", "pymodbus", "serial", "numpy", "aiohttp", "simulators")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tmp) / "isoedge.toml"
        if len(sys.argv) == 1:
            path.write_text(CONFIG, encoding="utf-8")
        started = time.perf_counter()
        import agent.service.runtime  # noqa: F401, PLC0415 - what `isoedge run` imports
        from agent.service.config import load_config  # noqa: PLC0415

        config = load_config(path)
        elapsed = time.perf_counter() - started
    loaded = sorted(name for name in HEAVY if name in sys.modules)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"devices: {[d.type for d in config.devices]}")
    print(f"peak RSS {peak_mb:.1f} MB; import + load {elapsed * 1000:.0f} ms")
    print(f"heavy libraries loaded: {loaded}")


if __name__ == "__main__":
    main()
