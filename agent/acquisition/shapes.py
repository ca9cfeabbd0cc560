"""What a batch's shape (device, channels) determines, worked out once per shape.

A device's batches mostly repeat one shape (a Modbus block, an OPC UA subscription), so what
depends only on it — which channels a QC rule watches, the live-state keys — is built on the
first batch and reused. Bounded: batches of ever new shapes (notification bursts) clear the
cache rather than grow it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

SHAPE_CACHE_SIZE = 4096  # batch shapes remembered per cache

Built = TypeVar("Built")


class ShapeCache(Generic[Built]):
    """One value per batch shape, built by the caller's function the first time."""

    __slots__ = ("_built",)

    def __init__(self) -> None:
        self._built: dict[tuple[str, tuple[str, ...]], Built] = {}

    def get(self, device: str, channels: Sequence[str], build: Callable[[], Built]) -> Built:
        """The value for this shape; `build()` when the shape is new."""
        key = (device, tuple(channels))
        found = self._built.get(key)
        if found is None:
            if len(self._built) >= SHAPE_CACHE_SIZE:
                self._built.clear()
            found = self._built[key] = build()
        return found

    def clear(self) -> None:
        """Forget every shape (what they determined has changed)."""
        self._built.clear()
