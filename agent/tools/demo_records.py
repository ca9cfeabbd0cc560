"""`isoedge demo`'s generator elution: one Tc-99m eluate measured and signed at start.

As the demo technologist, on the demo's simulated dose calibrator: the eluate on the Tc-99m
setting, then in the Mo-99 canister on the Mo-99 setting (each step's go-ahead given once the
simulator holds what the step asks; the calibrator's own settled readings complete it), the
Al3+ spot test typed, the record signed and published on the `qc` stream.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from collections.abc import Mapping

    from agent.service.runtime import Agent

log = structlog.get_logger("isoedge.demo")

ELUATE_MBQ = 1850.0  # Tc-99m in the eluate
CANISTER_READING_MBQ = 0.06  # Mo-99 in the canister: x 2.0 = 120 kBq, 0.065 kBq/MBq


async def demo_elution(agent: Agent, simulators: Mapping[str, Any],
                       person: tuple[str, str]) -> dict[str, Any] | None:  # fmt: skip
    """Elute the first Tc-99m generator whose calibrator is simulated; the signed record."""
    desk = agent.generator_records.elutions
    generator = next((g for g in desk.generators.values()
                      if g.nuclide == "Tc-99m" and g.calibrator in simulators), None)  # fmt: skip
    if generator is None:
        return None
    simulator = simulators[generator.calibrator]
    sample = (simulator.chamber.sample_nuclide, simulator.chamber.true_activity_mbq())
    name, password = person
    try:
        run = desk.start_elution(generator.id, by=name, volume_ml=5.0)
        async with asyncio.timeout(60):
            while run.state == "running":
                step = run.current
                if step is not None and step.waiting_for_operator:
                    if step.role == "tc99m":
                        simulator.load_sample("Tc-99m", ELUATE_MBQ)
                    else:
                        simulator.load_sample("Mo-99", CANISTER_READING_MBQ)
                    desk.confirm_step(run.id, step.index, by=name)
                await asyncio.sleep(0.2)
        desk.enter_aluminium(run.id, by=name, colour="lighter")
        record = await desk.sign(run.id, name=name, password=password)
    except Exception:
        log.exception("demo elution failed", generator=generator.id)
        return None
    finally:
        simulator.load_sample(*sample)  # the demo's F-18 sample back in the chamber
    log.info("demo elution signed", eluate=record["eluate_id"],
             mo99_kbq_per_mbq=round(record["mo99_ratio_kbq_per_mbq"], 4),
             result=record["result"])  # fmt: skip
    return record


__all__ = ["demo_elution"]
