"""The QA desk's errors: a request that cannot be carried out."""

from __future__ import annotations

from agent.core.messages import Message


class QCError(ValueError):
    """A QC request that cannot be carried out (unknown device, test not configured...).

    `message` is the text as data (a code of `agent.core.messages.TEMPLATES` and its
    parameters): the console renders it in the reader's language; `str()` is its English text.
    """

    def __init__(self, message: Message | str) -> None:
        self.message = message if isinstance(message, Message) else Message(message)
        super().__init__(str(self.message))


__all__ = ["QCError"]
