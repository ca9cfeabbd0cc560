"""Replay requests: the typed, signed, size-limited parser and the budget (docs/contract.md §2).

A replay request on `…/replay/request` is hostile until proven otherwise. `ReplayGate.admit`
turns any bytes into either an accepted range or a refusal reason, never an exception:

1. a retained message is refused (a retained request would be answered at every reconnect);
2. the body is at most `MAX_REQUEST_BYTES`, a flattened JWS of three short strings;
3. the JWS verifies (joserfc) against a key the agent trusts (`replay.trusted_keys`: the public
   JWKs of the central ingest, made with `isoedge keygen`), with `typ` `isoedge-replay+json`;
4. the payload is a `ReplayPayload` (strict integers within SQLite's range, `from_seq <=
   to_seq`), names this agent, was created within `replay.max_age_s`, and its `id` was not
   seen before (a recorded request cannot be played again);
5. the range is validated against what the agent ever produced, capped at
   `replay.max_envelopes`, merged with what is already queued (one request in flight, the
   rest merged into a short queue), and charged to a per-minute budget of requests and
   envelopes.

Every outcome is counted by reason (`counts`; the agent's status and /metrics show them).
"""

from __future__ import annotations

import collections
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    ValidationError,
    model_validator,
)

from agent.core.settings import StrictSection
from agent.delivery.signing import ALG, Signer, b64url
from agent.delivery.verification import KeyRegistry, VerificationError

REPLAY_TYP = "isoedge-replay+json"
MAX_REQUEST_BYTES = 4096
MAX_SEQ = 2**63 - 1  # SQLite's INTEGER; a larger number is never a seq
_MINUTE_S = 60.0
_SEEN_IDS = 4096  # request ids remembered (a replayed request is refused)

RefusalReason = Literal[
    "retained",
    "too_large",
    "malformed",
    "untrusted",
    "bad_signature",
    "wrong_type",
    "invalid",
    "foreign",
    "stale",
    "duplicate",
    "out_of_range",
    "queue_full",
    "budget",
    "error",
]


class ReplaySection(StrictSection):
    """`[replay]`: who may ask this agent to re-publish its archive, and how much."""

    trusted_keys: list[Path] = Field(
        default_factory=list,
        description="Public JWKs (`signing.pub.jwk` of `isoedge keygen`) of the central ingest(s)"
        " whose signed replay requests this agent answers; none: every request is refused.",
    )
    max_envelopes: int = Field(
        default=5000, ge=1, le=1_000_000, description="Envelopes one request may ask for (capped)."
    )
    requests_per_min: int = Field(
        default=30, ge=1, le=10_000, description="Requests accepted per minute."
    )
    envelopes_per_min: int = Field(
        default=20_000, ge=1, le=10_000_000, description="Envelopes re-published per minute."
    )
    max_pending: int = Field(
        default=8, ge=1, le=1000, description="Ranges queued behind the one being answered."
    )
    max_age_s: float = Field(
        default=300,
        gt=0,
        le=86_400,
        description="A request created longer ago (or ahead) is stale.",
    )


_Id = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
_Name = Annotated[str, StringConstraints(min_length=1, max_length=128)]
_B64 = Annotated[str, StringConstraints(max_length=MAX_REQUEST_BYTES, pattern=r"^[A-Za-z0-9_-]*$")]


class ReplayJWS(BaseModel):
    """The outer form: a flattened JWS of three base64url strings, nothing else."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    protected: _B64
    payload: _B64
    signature: _B64


class ReplayPayload(BaseModel):
    """What a replay request asks (the signed payload)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    v: Literal[1]
    site: _Name
    agent: _Name
    id: _Id
    from_seq: StrictInt = Field(ge=1, le=MAX_SEQ)
    to_seq: StrictInt = Field(ge=1, le=MAX_SEQ)
    created: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> ReplayPayload:
        if self.from_seq > self.to_seq:
            raise ValueError("from_seq is after to_seq")
        return self


def load_trusted(paths: list[Path]) -> KeyRegistry:
    """The trusted ingest keys; ValueError naming `replay.trusted_keys` and the file."""
    registry = KeyRegistry()
    for path in paths:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            for jwk in document.get("keys", [document]):
                registry.add(jwk)
        except (OSError, ValueError, TypeError, AttributeError, KeyError) as exc:
            raise ValueError(
                f"replay.trusted_keys: {path}: not a readable public JWK"
                f" ({type(exc).__name__}: {exc})"
            ) from None
    return registry


def build_request(
    signer: Signer,
    *,
    site: str,
    agent: str,
    from_seq: int,
    to_seq: int,
    created: datetime | None = None,
    request_id: str | None = None,
) -> bytes:
    """A signed replay request (the central ingest's side; `typ` isoedge-replay+json)."""
    when = created or datetime.now(UTC)
    payload = json.dumps(
        {
            "v": 1,
            "site": site,
            "agent": agent,
            "id": request_id or uuid.uuid4().hex,
            "from_seq": from_seq,
            "to_seq": to_seq,
            "created": when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        },
        separators=(",", ":"),
    ).encode()
    header = b64url(
        json.dumps(
            {"alg": ALG, "kid": signer.kid, "typ": REPLAY_TYP}, separators=(",", ":")
        ).encode()
    )
    body = b64url(payload)
    signature = b64url(signer.private_key.sign(f"{header}.{body}".encode("ascii")))
    return json.dumps(
        {"protected": header, "payload": body, "signature": signature}, separators=(",", ":")
    ).encode()


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a request was not answered."""

    reason: RefusalReason
    detail: str


@dataclass(frozen=True, slots=True)
class Accepted:
    """A range queued for re-publication (`unavailable`: the part the archive no longer has)."""

    from_seq: int
    to_seq: int
    request_id: str
    merged: bool
    unavailable: list[list[int]] = field(default_factory=list)


class ReplayGate:
    """Admission of replay requests: parse, authenticate, bound, merge, budget; never raises."""

    def __init__(
        self, settings: ReplaySection, *, site: str, agent: str, registry: KeyRegistry | None = None
    ) -> None:
        self.settings = settings
        self.site = site
        self.agent = agent
        self.registry = registry if registry is not None else load_trusted(settings.trusted_keys)
        self.counts: collections.Counter[str] = collections.Counter()
        self.last_refused: dict[str, Any] | None = None
        self.pending: list[list[int]] = []  # merged, sorted, disjoint ranges to answer
        self.in_flight: tuple[int, int] | None = None
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._window: collections.deque[tuple[float, int]] = collections.deque()

    # ---------------------------------------------------------------- admission
    def admit(
        self,
        body: bytes,
        *,
        retained: bool,
        archive: tuple[int, int] | None,
        last_seq: int,
        now: float | None = None,
    ) -> Accepted | Refused:
        """Decide on one message and count the outcome.

        `archive` is the (first, last) seq the archive last held (None: not known), `last_seq`
        the newest seq ever made.
        """
        try:
            outcome = self._admit(
                body,
                retained=retained,
                archive=archive,
                last_seq=last_seq,
                now=time.time() if now is None else now,
            )
        except Exception as exc:  # a hostile message never reaches the loop: counted instead
            outcome = Refused("error", f"{type(exc).__name__}: {exc}"[:200])
        if isinstance(outcome, Refused):
            self.counts[f"refused_{outcome.reason}"] += 1
            self.last_refused = {
                "reason": outcome.reason,
                "detail": outcome.detail[:200],
                "t": _rfc3339(time.time()),
            }
        else:
            self.counts["merged" if outcome.merged else "accepted"] += 1
        return outcome

    def _admit(
        self,
        body: bytes,
        *,
        retained: bool,
        archive: tuple[int, int] | None,
        last_seq: int,
        now: float,
    ) -> Accepted | Refused:
        request = self._authenticate(body, retained=retained)
        if isinstance(request, Refused):
            return request
        if (request.site, request.agent) != (self.site, self.agent):
            return Refused("foreign", f"for {request.site[:64]}/{request.agent[:64]}")
        age = now - request.created.timestamp()
        if abs(age) > self.settings.max_age_s:
            return Refused("stale", f"created {age:.0f} s ago")
        if request.id in self._seen:
            return Refused("duplicate", f"request {request.id} already seen")
        self._remember(request.id)
        return self._schedule(request, archive=archive, last_seq=last_seq, now=now)

    def _authenticate(  # noqa: PLR0911 - one return per refusal reason
        self, body: bytes, *, retained: bool
    ) -> ReplayPayload | Refused:
        if retained:
            return Refused("retained", "retained replay requests are never answered")
        if len(body) > MAX_REQUEST_BYTES:
            return Refused("too_large", f"{len(body)} bytes (at most {MAX_REQUEST_BYTES})")
        try:
            outer = ReplayJWS.model_validate_json(body)
        except ValidationError as exc:
            return Refused("malformed", _first_error(exc))
        if not self.registry.kids:
            return Refused("untrusted", "no trusted ingest key configured (replay.trusted_keys)")
        try:
            verified = self.registry.verify(outer.model_dump_json().encode())
        except VerificationError as exc:
            reason: RefusalReason = {
                "unknown_key": "untrusted",
                "bad_signature": "bad_signature",
            }.get(exc.code, "malformed")  # type: ignore[assignment]
            return Refused(reason, str(exc)[:200])
        if verified.header.get("typ") != REPLAY_TYP:
            return Refused("wrong_type", f"typ {str(verified.header.get('typ'))[:40]!r}")
        try:
            return ReplayPayload.model_validate_json(verified.payload)
        except ValidationError as exc:
            return Refused("invalid", _first_error(exc))

    def _schedule(  # noqa: PLR0911 - one return per outcome
        self, request: ReplayPayload, *, archive: tuple[int, int] | None, last_seq: int, now: float
    ) -> Accepted | Refused:
        lo, hi = request.from_seq, request.to_seq
        if lo > last_seq:
            return Refused("out_of_range", f"{lo}..{hi} after the last seq {last_seq}")
        hi = min(hi, last_seq, lo + self.settings.max_envelopes - 1)
        unavailable: list[list[int]] = []
        # `archive` is the last known range (None: not known); the worker re-reads it.
        if archive is not None and hi < archive[0]:
            unavailable.append([lo, hi])
            lo = hi + 1  # nothing to send
        elif archive is not None and lo < archive[0]:
            unavailable.append([lo, archive[0] - 1])
            lo = archive[0]
        if lo > hi:  # nothing held: answered at once (the status says what is unavailable)
            return Accepted(
                request.from_seq, request.to_seq, request.id, merged=False, unavailable=unavailable
            )
        covered = self._covered(lo, hi)
        if covered:
            return Accepted(lo, hi, request.id, merged=True, unavailable=unavailable)
        self._trim_window(now)
        if len(self._window) >= self.settings.requests_per_min:
            return Refused(
                "budget", f"more than {self.settings.requests_per_min} requests a minute"
            )
        spent = sum(n for _t, n in self._window)
        if spent + (hi - lo + 1) > self.settings.envelopes_per_min:
            return Refused(
                "budget",
                f"{hi - lo + 1} envelopes over the budget of"
                f" {self.settings.envelopes_per_min} a minute ({spent} spent)",
            )
        merged = self._merge(lo, hi)
        if merged is None:
            return Refused("queue_full", f"{len(self.pending)} ranges already queued")
        self._window.append((now, hi - lo + 1))
        return Accepted(lo, hi, request.id, merged=merged, unavailable=unavailable)

    # ---------------------------------------------------------------- the queue
    def take(self) -> tuple[int, int] | None:
        """The next range to answer (it becomes the one in flight)."""
        if not self.pending:
            self.in_flight = None
            return None
        lo, hi = self.pending.pop(0)
        self.in_flight = (lo, hi)
        return lo, hi

    def done(self) -> None:
        """The range in flight was answered."""
        self.in_flight = None

    def _covered(self, lo: int, hi: int) -> bool:
        spans = [*self.pending, *([list(self.in_flight)] if self.in_flight else [])]
        return any(a <= lo and hi <= b for a, b in spans)

    def _merge(self, lo: int, hi: int) -> bool | None:
        """Insert lo..hi into the pending ranges; True if it joined one, None if full."""
        joined = False
        out: list[list[int]] = []
        for a, b in self.pending:
            if a <= hi + 1 and lo <= b + 1:
                lo, hi, joined = min(a, lo), max(b, hi), True
            else:
                out.append([a, b])
        if not joined and len(out) >= self.settings.max_pending:
            return None
        out.append([lo, hi])
        out.sort()
        self.pending = out
        return joined

    def _remember(self, request_id: str) -> None:
        self._seen[request_id] = None
        while len(self._seen) > _SEEN_IDS:
            self._seen.popitem(last=False)

    def _trim_window(self, now: float) -> None:
        while self._window and now - self._window[0][0] >= _MINUTE_S:
            self._window.popleft()

    # ---------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        """What the agent's status says about replay requests (counts by outcome)."""
        return {
            "counts": dict(sorted(self.counts.items())),
            "last_refused": self.last_refused,
            "pending": [list(r) for r in self.pending],
            "in_flight": list(self.in_flight) if self.in_flight else None,
            "trusted_kids": sorted(self.registry.kids),
        }


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    if not errors:
        return "invalid"
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "(body)"
    return f"{where}: {first.get('msg', 'invalid')}"[:200]


def _rfc3339(epoch: float) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=epoch)).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ"
    )
