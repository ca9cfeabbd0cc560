"""The signed evidence of a stored envelope, packed small and given back verifiable.

A flattened JWS is `{"payload", "protected", "signature"}`; what the signature covers is
`protected` and `payload` exactly as sent. The payload is base64url of JSON, which compresses
poorly, so the evidence keeps the decoded JSON (it compresses several times better) with the
protected header and signature as sent, and rebuilds the same three members for verification.
A JWS whose payload is not in the canonical unpadded base64url form, or that has other members,
is kept as received instead.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Mapping
from typing import Any

import orjson

from agent.core.compression import compress

PACKED = b"P"  # zlib(protected \n signature \n payload JSON)
AS_RECEIVED = b"J"  # zlib(the JWS as received)
# zlib level 1 (agent/core/compression.py): 35 µs an envelope of 100 readings against 85 µs at
# level 6, for about 2 bytes a reading more before PostgreSQL's pages (docs/benchmarks.md,
# issue 24 third pass).


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _parts(body: bytes) -> tuple[str, str, bytes] | None:
    """(protected, signature, payload bytes) of a canonical flattened JWS, else None."""
    try:
        jws = orjson.loads(body)
        protected, payload_b64, signature = jws["protected"], jws["payload"], jws["signature"]
        payload = base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4))
        canonical = _b64(payload).decode("ascii") == payload_b64
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeError):
        return None
    if (
        not canonical
        or set(jws) != {"protected", "payload", "signature"}
        or not isinstance(protected, str)
        or not isinstance(signature, str)
        or "\n" in protected + signature
        or not (protected + signature).isascii()
    ):
        return None
    return protected, signature, payload


def pack(body: bytes) -> bytes:
    """The stored form of a received JWS (which has verified)."""
    parts = _parts(body)
    if parts is None:
        return AS_RECEIVED + compress(body)
    protected, signature, payload = parts
    packed = b"\n".join((protected.encode("ascii"), signature.encode("ascii"), payload))
    return PACKED + compress(packed)


def pack_verified(members: Mapping[str, Any] | None, payload: bytes, body: bytes) -> bytes:
    """`pack(body)` for a JWS already parsed and verified: its members and its payload bytes.

    The ingest has decoded the payload to verify it; here it is only re-encoded to check that
    the base64url sent is the canonical one (else the JWS is kept as received, as by `pack`).
    """
    if members is None or set(members) != {"protected", "payload", "signature"}:
        return pack(body)
    protected, signature, payload_b64 = (
        members["protected"],
        members["signature"],
        members["payload"],
    )
    if (
        not isinstance(protected, str)
        or not isinstance(signature, str)
        or not isinstance(payload_b64, str)
        or "\n" in protected + signature
        or not (protected + signature).isascii()
        or _b64(payload).decode("ascii") != payload_b64
    ):
        return pack(body)
    packed = b"\n".join((protected.encode("ascii"), signature.encode("ascii"), payload))
    return PACKED + compress(packed)


def unpack(blob: bytes) -> bytes:
    """A JWS (flattened JSON) equivalent to the one received; raises ValueError if damaged."""
    try:
        data = zlib.decompress(blob[1:])
    except zlib.error as exc:
        raise ValueError(f"evidence damaged: {exc}") from None
    if blob[:1] == AS_RECEIVED:
        return data
    if blob[:1] != PACKED:
        raise ValueError("evidence of an unknown form")
    protected, signature, payload = data.split(b"\n", 2)
    return orjson.dumps(
        {
            "payload": _b64(payload).decode("ascii"),
            "protected": protected.decode("ascii"),
            "signature": signature.decode("ascii"),
        }
    )
