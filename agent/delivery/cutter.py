"""The envelope cutter: rows of serialised items into signed, chained envelopes.

A pure component: no database, no thread, no clock of its own beyond the `created` stamp. The
state database's owner thread hands it the rows due and stores what it returns, in the
transaction that also moves the chain head; after a rollback it is told the head again.

An envelope's items are the rows' texts joined: nothing is parsed back or re-encoded, so what
was committed at acquisition is exactly what is signed. Each envelope gets the next `seq` and,
as `prev`, base64url(sha256) of the previous envelope's payload (docs/contract.md).

Envelopes are stored compact: the payload zlib-compressed, the raw signature, the key's
protected header once per key; `published_bytes` rebuilds the published JWS from them,
byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from agent.core.compression import compress
from agent.core.reading import rfc3339
from agent.delivery.signing import Signer, b64url, jws_bytes
from agent.delivery.verification import MAX_ENVELOPE_ITEM_BYTES

TopicFn = Callable[[str, str], str]


@dataclass(frozen=True, slots=True)
class CutEnvelope:
    """One envelope as cut: what is stored (compact) and what is published."""

    seq: int
    topic: str
    stream: str
    device: str
    n_items: int
    packed: bytes  # the payload, zlib-compressed (stored)
    signature: bytes  # raw signature (stored)
    body: bytes  # the published JWS bytes


class EnvelopeCutter:
    """Cuts envelopes for one agent and key, keeping the chain head (`last_seq`, `last_hash`)."""

    def __init__(self, signer: Signer, *, site: str, agent: str, topic_for: TopicFn) -> None:
        self.signer = signer
        self.site = site
        self.agent = agent
        self.topic_for = topic_for
        self.last_seq = 0
        self.last_hash = ""

    def reset(self, last_seq: int, last_hash: str) -> None:
        """The chain head as stored (at open, after a rollback, or continued after damage)."""
        self.last_seq, self.last_hash = last_seq, last_hash

    def cut(self, stream: str, device: str, rows: list[str], n_items: int) -> CutEnvelope:
        """The next envelope of `rows` (serialised items, joined by commas); the head moves."""
        seq = self.last_seq + 1
        payload = (
            '{"v":1,"site":'
            + json.dumps(self.site)
            + ',"agent":'
            + json.dumps(self.agent)
            + ',"stream":'
            + json.dumps(stream)
            + ',"seq":'
            + str(seq)
            + ',"prev":'
            + json.dumps(self.last_hash)
            + ',"created":'
            + json.dumps(rfc3339(datetime.now(UTC)))
            + ',"items":['
            + ",".join(rows)
            + "]}"
        ).encode("utf-8")
        encoded = b64url(payload)
        signature = self.signer.signature(encoded)
        body = jws_bytes(self.signer.protected, encoded, signature)
        self.last_seq = seq
        self.last_hash = b64url(hashlib.sha256(payload).digest())
        return CutEnvelope(
            seq,
            self.topic_for(stream, device),
            stream,
            device,
            n_items,
            compress(payload),
            signature,
            body,
        )  # JSON readings: ~4x


def published_bytes(protected: str, packed: bytes, signature: bytes) -> bytes:
    """The published JWS of a compact envelope (its compressed payload and raw signature)."""
    return jws_bytes(protected, b64url(zlib.decompress(packed)), signature)


def envelope_spans(counts: list[int], sizes: list[int], limit: int) -> list[tuple[int, int, int]]:
    """Rows [start, end) per envelope: whole rows, within both bounds unless one row is more.

    The bounds: `limit` items, and `MAX_ENVELOPE_ITEM_BYTES` bytes of items.
    """
    spans: list[tuple[int, int, int]] = []
    start, n_items, n_bytes = 0, 0, 0
    for index, (count, size) in enumerate(zip(counts, sizes, strict=True)):
        if n_items and (n_items + count > limit or n_bytes + size > MAX_ENVELOPE_ITEM_BYTES):
            spans.append((start, index, n_items))
            start, n_items, n_bytes = index, 0, 0
        n_items += count
        n_bytes += size
    if n_items or start < len(counts):
        spans.append((start, len(counts), n_items))
    return spans
