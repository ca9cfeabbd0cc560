"""Test utilities shared by the suite: free ports, waiting on conditions, running the CLI."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from agent.tools.mosquitto import free_port

REPO = Path(__file__).resolve().parent.parent


__all__ = ["REPO", "cli_env", "free_port", "isoedge_cmd", "wait_for_condition", "wait_until"]


def cli_env() -> dict[str, str]:
    """Environment that runs this checkout's code in a subprocess."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def isoedge_cmd(*args: str) -> list[str]:
    """argv for running the `isoedge` CLI of this checkout."""
    return [sys.executable, "-m", "agent", *args]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> None:
    """Block until `predicate()` is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


async def wait_for_condition(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, interval: float = 0.05
) -> None:
    """Async version of `wait_until`; the predicate may be a coroutine function."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")
