"""Throttling of password checks: per account and per client address, slot taken first.

A password check (scrypt) is slow, so parallel guesses used to all be checked before the first
failure was counted. Here a failure slot is reserved BEFORE the check, under a lock: once an
account or an address has `limit` failures (or reservations) in the window, further attempts
are refused without hashing. A successful check gives its slot back. Used by the console login,
electronic signatures (agent.qc) and the fleet page (central), hence in agent.core.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Slot:
    """A reserved failure: keep it on a failed check, `release()` it on success."""

    account: str | None
    address: str | None
    t: float


class LoginThrottle:
    """Sliding-window failure counts per account and per address; thread-safe, bounded."""

    def __init__(
        self,
        *,
        per_account: int,
        per_address: int | None,
        window_s: float,
        max_keys: int = 4096,
    ) -> None:
        self.per_account = per_account
        self.per_address = per_address
        self.window_s = window_s
        self.max_keys = max_keys
        self._accounts: OrderedDict[str, deque[float]] = OrderedDict()
        self._addresses: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _window(self, table: OrderedDict[str, deque[float]], key: str, now: float) -> deque[float]:
        window = table.get(key)
        if window is None:
            if len(table) >= self.max_keys:
                table.popitem(last=False)  # forget the longest-unseen key (bounded memory)
            window = table[key] = deque()
        table.move_to_end(key)
        cutoff = now - self.window_s
        while window and window[0] < cutoff:
            window.popleft()
        return window

    def reserve(self, account: str | None, address: str | None) -> Slot | None:
        """Take a failure slot for one check; None (refuse, do not hash) when over a limit."""
        now = time.monotonic()
        with self._lock:
            by_account = None if account is None else self._window(self._accounts, account, now)
            by_address = (
                None if address is None or self.per_address is None
                else self._window(self._addresses, address, now)
            )  # fmt: skip
            if by_account is not None and len(by_account) >= self.per_account:
                return None
            if (by_address is not None and self.per_address is not None
                    and len(by_address) >= self.per_address):  # fmt: skip
                return None
            if by_account is not None:
                by_account.append(now)
            if by_address is not None:
                by_address.append(now)
            return Slot(account, None if by_address is None else address, now)

    def release(self, slot: Slot) -> None:
        """The check succeeded: it was no failure."""
        with self._lock:
            for table, key in ((self._accounts, slot.account), (self._addresses, slot.address)):
                window = None if key is None else table.get(key)
                if window is not None and slot.t in window:
                    window.remove(slot.t)

    def blocked(self, account: str | None, address: str | None) -> bool:
        """True when a check would be refused now (without reserving)."""
        now = time.monotonic()
        with self._lock:
            if account is not None and len(
                self._window(self._accounts, account, now)
            ) >= self.per_account:
                return True
            return (
                address is not None and self.per_address is not None
                and len(self._window(self._addresses, address, now)) >= self.per_address
            )  # fmt: skip


__all__ = ["LoginThrottle", "Slot"]
