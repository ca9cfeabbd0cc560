"""Power cuts at random moments: at least 50 by default (issue 14); the suite runs 5.

The agent's state directory is on cutfs (tests/faults/cutfs.py), a FUSE file system that
loses every write not fsynced at the moment of a cut. Each cycle starts the agent, lets it
acquire, publish and receive PUBACKs for a random 0.2-2 s (the broker is stopped in about a
third of the cycles, so backlogs are cut and drained too), then cuts the power. After each cut
every database passes PRAGMA integrity_check and the audit hash chain holds; at the end every
envelope arrived once per seq with a gapless hash chain, and every reading the agent reported
durable before a cut was delivered. Needs root and /dev/fuse.

    .venv/bin/python bench/powercut.py --cuts 50 --seed 1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from faults.cutfs import fuse_available  # noqa: E402
from faults.powercut import run_power_cuts  # noqa: E402

from agent.tools.mosquitto import Mosquitto  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuts", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    reason = fuse_available()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="isoedge-powercut-") as tmp:
        work = Path(tmp)
        broker = Mosquitto(work, persistent=True)
        broker.start()
        started = time.monotonic()
        try:
            figures = run_power_cuts(work, broker, args.cuts, seed=args.seed)
        except AssertionError as exc:
            print(f"FAILED after {time.monotonic() - started:.0f} s: {exc}")
            return 1
        finally:
            broker.stop()
        figures["seconds"] = round(time.monotonic() - started, 1)
        figures["seed"] = args.seed
        print(json.dumps(figures))
        print(f"{figures['cuts']} power cuts: every database passed integrity_check, the audit"
              f" chain held, {figures['envelopes']} envelopes gapless and chained,"
              f" {figures['readings']} readings delivered,"
              f" {figures['durable_before_cuts']:.0f} durable before cuts all among them")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
