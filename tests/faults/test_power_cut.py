"""Power cuts (issue 14): a FUSE file system that loses every unsynced write, cut 5 times.

The 50-cut version is `bench/powercut.py`; both run `faults.powercut.run_power_cuts`.
"""

from __future__ import annotations

import pytest
from faults.cutfs import fuse_available
from faults.powercut import run_power_cuts

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_five_power_cuts_lose_nothing_durable_and_the_chains_hold(tmp_path, mosquitto):
    reason = fuse_available()
    if reason is not None:
        pytest.skip(reason)
    figures = run_power_cuts(tmp_path, mosquitto, cuts=5, seed=14)
    assert figures["cuts"] == 5
    assert figures["durable_before_cuts"] > 0
