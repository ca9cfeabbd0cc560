"""Storage pressure as a typed state: ok, high, full.

The state database reports two: its quota (database pages in use against `outbox.quota_mb`)
and the disk's free space against its reserve (`agent.state.diskspace`). The agent applies the
worse of both to acquisition's pause policy (`agent.acquisition.supervisor.pauses_under`)
whenever either changes.
"""

from __future__ import annotations

import enum


class Pressure(enum.StrEnum):
    """Storage pressure: of the outbox quota, of the disk's free space, or the worse of both.

    A string enum, so it reads, logs and serialises as "ok", "high" or "full"; ordered by
    `rank`. Acquisition's pause policy (`agent.acquisition.supervisor.pauses_under`) subscribes
    to its changes through the agent.
    """

    OK = "ok"
    HIGH = "high"
    FULL = "full"

    @property
    def rank(self) -> int:
        """0 for ok, 1 for high, 2 for full."""
        return _RANK[self]

    @staticmethod
    def worst(*states: Pressure) -> Pressure:
        """The highest pressure of `states` (ok when none)."""
        return max(states, key=lambda state: state.rank, default=Pressure.OK)


_RANK = {Pressure.OK: 0, Pressure.HIGH: 1, Pressure.FULL: 2}
