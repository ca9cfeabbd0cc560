"""The QA desk's errors: a request that cannot be carried out."""

from __future__ import annotations


class QCError(ValueError):
    """A QC request that cannot be carried out (unknown device, test not configured...)."""


__all__ = ["QCError"]
