"""Fixtures of the fault tests: everything a test started is stopped, even when it fails."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest


@pytest.fixture
def teardown() -> Iterator[contextlib.ExitStack]:
    """Register stops (`teardown.callback(x.stop)`); run in reverse order after the test."""
    with contextlib.ExitStack() as stack:
        yield stack
