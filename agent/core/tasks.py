"""Stopping tasks reliably."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import structlog

log = structlog.get_logger("isoedge.tasks")

RECANCEL_S = 1.0


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any]], *, repeat_s: float = RECANCEL_S
) -> None:
    """Cancel `tasks` and return once all have ended, cancelling again every `repeat_s`.

    One cancel is not always enough on Python 3.11: when it lands just as the result an
    `asyncio.wait_for` awaits arrives, `wait_for` returns the result and the cancellation is
    lost. aiomqtt, asyncua and pymodbus all use `wait_for`, so a task blocked in them could
    otherwise run on, and whoever waits for it would wait forever (seen: an agent that never
    stopped after SIGTERM).
    """
    pending = {task for task in tasks if not task.done()}
    for task in pending:
        task.cancel()
    while pending:
        _done, pending = await asyncio.wait(pending, timeout=repeat_s)
        for task in pending:
            log.warning("task still running after cancel; cancelling again", task=task.get_name())
            task.cancel()
