"""The synthesis-module simulator on a free loopback port, for the OPC UA driver's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from simulators.opcua import SynthesisModuleSimulator


@pytest.fixture
async def module() -> AsyncIterator[SynthesisModuleSimulator]:
    """A running FDG synthesis module at 400 times real time, values updated every 0.1 s."""
    sim = SynthesisModuleSimulator(time_scale=400.0, seed=3, update_interval_s=0.1)
    await sim.start()
    yield sim
    await sim.stop()
