"""CPU cost per reading, stage by stage, from a py-spy profile of the agent.

`bench/peer.py --only isoedge --polls 1 --profile FILE` records collapsed stacks (py-spy,
non-idle samples only, so the shares approximate CPU time). This sorts every sample into
the stage of the data path it belongs to and scales the shares by the measured CPU cost per
reading (1e6 / readings_per_cpu_s from the same run):

    .venv/bin/python bench/stages.py FILE --readings-per-cpu-s 52688

Prints one JSON line: per stage the share of samples and µs of CPU per reading.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

# Samples whose innermost frame waits are not CPU (py-spy cannot always tell an idle thread).
IDLE_LEAVES = ("EpollSelector.select", "time.sleep", "Condition.wait", "Event.wait",
               "SimpleQueue.get", "outbox.py:440)")  # fmt: skip
# A commit is mostly waiting for fsync; shown on its own, and not part of the CPU split.
COMMIT_LEAVES = ("db.commit", "outbox.py:487)", "outbox.py:320)")
COMMIT = "outbox commit (SQLite + fsync, mostly waiting)"
# First match wins, in this order (a stack names its innermost frames last).
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("signing", ("sign_bytes", "delivery/signing.py")),
    ("outbox thread (SQLite, envelopes)", ("Outbox._run", "Outbox._loop_forever")),
    ("publisher (MQTT)", ("delivery/publish.py", "aiomqtt", "paho")),
    ("live state", ("LiveState.on_",)),
    ("QC", ("QCEngine.", "agent/qc/")),
    ("outbox submit", ("Outbox.submit",)),
    ("pipeline (convert, items, serialise)", ("Pipeline.",)),
    ("driver decode", ("ModbusDriver._decode", "BlockDecoder.", "ModbusPoint.decode",
                       "_decode_block", "ModbusDriver._bad")),
    ("driver requests (pymodbus, socket)", ("ModbusDriver._read", "modbus/bus.py", "pymodbus")),
    ("supervisor / driver loop", ("DeviceSupervisor.", "ModbusDriver.batches",
                                  "ModbusDriver.samples")),
]
OTHER = "event loop, timers, other"


def classify(stack: str) -> str | None:
    """The stage of one sample; None for an idle one."""
    leaf = stack.rsplit(";", 1)[-1]
    if any(needle in leaf for needle in IDLE_LEAVES):
        return None
    if any(needle in leaf for needle in COMMIT_LEAVES):
        return COMMIT
    for name, needles in STAGES:
        if any(needle in stack for needle in needles):
            return name
    return OTHER


def summarise(path: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stage = classify(stack)
            counts[stage or "idle"] += int(count)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path, help="py-spy collapsed stacks (-f raw)")
    parser.add_argument("--readings-per-cpu-s", type=float, required=True,
                        help="from the same run's JSON line")  # fmt: skip
    args = parser.parse_args()
    counts = summarise(args.profile)
    idle, commit = counts.pop("idle", 0), counts.pop(COMMIT, 0)
    total = sum(counts.values()) or 1
    us_per_reading = 1e6 / args.readings_per_cpu_s
    stages = {
        name: {"share": round(n / total, 3), "us_per_reading": round(us_per_reading * n / total, 2)}
        for name, n in counts.most_common()
    }
    print(json.dumps({"samples": total, "idle_samples": idle, "commit_samples": commit,
                      "cpu_us_per_reading": round(us_per_reading, 2),
                      "stages": stages}))  # fmt: skip


if __name__ == "__main__":
    main()
