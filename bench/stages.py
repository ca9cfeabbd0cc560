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
import functools
import json
import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Samples whose innermost frame waits are not CPU (py-spy cannot always tell an idle thread).
IDLE_LEAVES = ("EpollSelector.select", "time.sleep", "Condition.wait", "Event.wait",
               "SimpleQueue.get")  # fmt: skip
IDLE_CALLS = ("time.sleep(", ".wait(")  # a leaf line of the agent's own code that waits
# A commit is mostly waiting for fsync; shown on its own, and not part of the CPU split.
COMMIT_CALLS = (".commit()",)
COMMIT = "outbox commit (SQLite + fsync, mostly waiting)"
# First match wins, in this order (a stack names its innermost frames last).
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("signing", ("sign_bytes", "delivery/signing.py")),
    ("outbox thread (SQLite, envelopes)", ("Outbox._run", "Outbox._loop_forever")),
    ("publisher (MQTT)", ("delivery/publish.py", "aiomqtt", "paho")),
    ("live state", ("LiveState.on_",)),
    ("QC", ("RuleEngine.", "agent/qc/")),
    ("outbox submit", ("Outbox.submit",)),
    ("pipeline (convert, items, serialise)", ("Pipeline.",)),
    ("driver decode", ("ModbusDriver._decode", "BlockDecoder.", "ModbusPoint.decode",
                       "_decode_block", "ModbusDriver._bad")),
    ("driver requests (Modbus client, socket)", ("ModbusDriver._read", "modbus/bus.py",
                                                 "modbus/tcp.py", "pymodbus")),
    ("supervisor / driver loop", ("DeviceSupervisor.", "ModbusDriver.batches",
                                  "ModbusDriver.samples")),
]
OTHER = "event loop, timers, other"


@functools.cache
def source_line(path: str, line: int) -> str:
    """The text of `path:line` of the profiled checkout (py-spy names the line only)."""
    for root in (ROOT, Path.cwd()):
        try:
            return (root / path).read_text().splitlines()[line - 1]
        except (OSError, IndexError):
            continue
    return ""


def classify(stack: str) -> str | None:
    """The stage of one sample; None for an idle one."""
    leaf = stack.rsplit(";", 1)[-1]
    if any(needle in leaf for needle in IDLE_LEAVES):
        return None
    found = re.search(r"\((\S+?):(\d+)\)$", leaf)
    if found:
        text = source_line(found[1], int(found[2]))
        if any(call in text for call in IDLE_CALLS):
            return None
        if any(call in text for call in COMMIT_CALLS):
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
    parser.add_argument("--source", type=Path, help="the profiled checkout (default: this one)")
    args = parser.parse_args()
    if args.source is not None:
        global ROOT  # noqa: PLW0603 - one setting for the line look-ups
        ROOT = args.source
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
