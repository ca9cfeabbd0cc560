"""Status evidence: what the central ingest relies on, signed with the agent's key.

The retained status (`…/status`) is plain JSON anyone on the broker can overwrite. What the
ingest acts on travels inside it as `evidence`: a flattened JWS (the envelope form, the agent's
own Ed25519 key) with `typ` `isoedge-status+json` over

    {"v": 1, "site", "agent", "t", "archive": {"first_seq", "last_seq"} | null,
     "unsent_from": int | null, "last_seq": int, "calibrators": {device: {...}}}

The ingest uses `archive`, `unsent_from`, `last_seq` and `calibrators` only from verified
evidence of a registered agent (central/status.py); the rest of the status is display only.
The models here are the typed parsers of both documents, shared by the ingest.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from agent.delivery.signing import ALG, Signer, b64url

STATUS_TYP = "isoedge-status+json"
MAX_STATUS_BYTES = 64 * 1024

_Text = Annotated[str, StringConstraints(max_length=1000)]
_Key = Annotated[str, StringConstraints(min_length=1, max_length=128)]
_Seq = Annotated[StrictInt, Field(ge=0, le=2**63 - 1)]
_B64 = Annotated[str, StringConstraints(max_length=MAX_STATUS_BYTES, pattern=r"^[A-Za-z0-9_-]*$")]


class _Lenient(BaseModel):
    """Unknown members are dropped (newer agents add some); known ones are typed."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class ArchiveRange(_Lenient):
    """What the agent's archive holds."""

    first_seq: _Seq
    last_seq: _Seq


class CalibratorState(_Lenient):
    """One dose calibrator's release state (CONTRACT §5)."""

    release: Literal["released", "on_hold"]
    reason: _Text | None = None
    since: _Text | None = None
    due: dict[_Key, _Text | None] = Field(default_factory=dict, max_length=64)


class DeviceState(_Lenient):
    """One device's link state as the status shows it."""

    state: Annotated[str, StringConstraints(max_length=32)]
    detail: _Text | None = None


class ReplayAnswer(_Lenient):
    """The status's `replay`: what the last replay request got."""

    from_seq: _Seq
    to_seq: _Seq
    sent: _Seq
    unavailable: list[Annotated[list[_Seq], Field(max_length=2)]] = Field(
        default_factory=list, max_length=64
    )
    t: Annotated[str, StringConstraints(max_length=40)] | None = None


class LastRefusal(_Lenient):
    """Why the last replay request was refused."""

    reason: Annotated[str, StringConstraints(max_length=40)]
    detail: _Text | None = None
    t: Annotated[str, StringConstraints(max_length=40)] | None = None


class ReplayRequests(_Lenient):
    """The status's `replay_requests`: counts by outcome and the last refusal."""

    counts: dict[Annotated[str, StringConstraints(max_length=40)], _Seq] = Field(
        default_factory=dict, max_length=64
    )
    last_refused: LastRefusal | None = None


class SignedJWS(BaseModel):
    """A flattened JWS: three base64url strings, nothing else."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    protected: _B64
    payload: _B64
    signature: _B64


class Evidence(_Lenient):
    """The signed payload of `evidence`."""

    v: Literal[1]
    site: _Key
    agent: _Key
    t: Annotated[str, StringConstraints(min_length=20, max_length=40)]
    archive: ArchiveRange | None
    unsent_from: _Seq | None = None
    last_seq: _Seq
    calibrators: dict[_Key, CalibratorState] = Field(default_factory=dict, max_length=256)


class StatusDocument(_Lenient):
    """The plain status document as the ingest accepts it (everything optional but `state`)."""

    state: Literal["online", "offline"]
    version: Annotated[str, StringConstraints(max_length=64)] | None = None
    kid: Annotated[str, StringConstraints(max_length=128)] | None = None
    previous_kids: list[Annotated[str, StringConstraints(max_length=128)]] = Field(
        default_factory=list, max_length=64
    )
    host: Annotated[str, StringConstraints(max_length=256)] | None = None
    t: Annotated[str, StringConstraints(max_length=40)] | None = None
    reason: _Text | None = None
    devices: dict[_Key, DeviceState] = Field(default_factory=dict, max_length=1000)
    disk: (
        dict[
            Annotated[str, StringConstraints(max_length=40)],
            StrictInt | float | bool | _Text | None,
        ]
        | None
    ) = Field(default=None, max_length=32)
    replay: ReplayAnswer | None = None
    replay_requests: ReplayRequests | None = None
    evidence: SignedJWS | None = None


def sign_evidence(
    signer: Signer,
    *,
    site: str,
    agent: str,
    t: str,
    archive: dict[str, int] | None,
    unsent_from: int | None,
    last_seq: int,
    calibrators: dict[str, Any],
) -> dict[str, str]:
    """The `evidence` member of the status: a JWS of the agent's key over what is relied on."""
    payload = json.dumps(
        {
            "v": 1,
            "site": site,
            "agent": agent,
            "t": t,
            "archive": archive,
            "unsent_from": unsent_from,
            "last_seq": last_seq,
            "calibrators": calibrators,
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    header = b64url(
        json.dumps(
            {"alg": ALG, "kid": signer.kid, "typ": STATUS_TYP}, separators=(",", ":")
        ).encode()
    )
    body = b64url(payload)
    signature = b64url(signer.private_key.sign(f"{header}.{body}".encode("ascii")))
    return {"protected": header, "payload": body, "signature": signature}
