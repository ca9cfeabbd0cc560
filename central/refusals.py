"""What the ingest keeps of what it did not store as data (refusals, conflicts), and its alerts.

- Rejected messages: the first `body_bytes` of the body with the SHA-256 and size of the whole
  (a 10 MiB junk message costs a few KiB of evidence, and the hash still identifies it).
- Conflicting envelopes: the same (site, agent, seq) as a stored envelope, validly signed, but
  other payload bytes. Both are the agent's signed statements; the second is kept whole in
  `conflicting_envelopes` and raises a critical central alert.
- Alerts about hostile or broken input are rate-limited in the process (`AlertLimiter`): one
  database write per alert and interval carrying the count seen meanwhile, and a bound on how
  many distinct sources open an alert of their own per hour (the rest share one alert), so a
  client inventing a new site name per message cannot flood the alert list.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg

from central.envelope import Verified

RAISE_ALERT_N = """
INSERT INTO central_alerts (kind, site, agent, key, message, detail, count, severity)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (kind, site, agent, key) WHERE cleared IS NULL
DO UPDATE SET count = central_alerts.count + EXCLUDED.count, updated = now(),
              message = EXCLUDED.message, detail = EXCLUDED.detail, severity = EXCLUDED.severity
"""

MANY = "*"  # site/agent of the shared alert of sources beyond the hourly bound


@dataclass(slots=True)
class Rejection:
    """A message refused as data."""

    topic: str
    site: str | None
    agent: str | None
    kid: str | None
    reason: str
    body: bytes
    code: str = "malformed"


@dataclass(frozen=True, slots=True)
class AlertNote:
    """One central alert write (count: occurrences since the last write of this alert)."""

    kind: str
    site: str
    agent: str
    key: str
    message: str
    detail: dict[str, Any]
    count: int = 1
    severity: str = "warning"


def printable(text: str | None, limit: int = 64) -> str:
    """A name from a topic, fit for a row and an alert: no control characters, bounded."""
    if text is None:
        return ""
    clean = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return clean + ("…" if len(text) > limit else "")


class AlertLimiter:
    """Coalesces repeated alerts; owned by the thread that decodes (not thread-safe)."""

    def __init__(self, interval_s: float = 60.0, sources_per_hour: int = 20) -> None:
        self.interval_s = interval_s
        self.sources_per_hour = sources_per_hour
        self._last: dict[tuple[str, str, str, str], tuple[float, int]] = {}
        self._new_sources: deque[float] = deque()

    def note(self, note: AlertNote, *, new_source: bool = False,
             now: float | None = None) -> AlertNote | None:
        """The alert to write now (with the count held back since the last one), or None."""
        now = time.monotonic() if now is None else now
        key = (note.kind, note.site, note.agent, note.key)
        if key not in self._last and new_source:
            while self._new_sources and self._new_sources[0] < now - 3600.0:
                self._new_sources.popleft()
            if len(self._new_sources) >= self.sources_per_hour:
                # The message is a code (agent/core/messages.py); its params are the detail.
                note = AlertNote(note.kind, MANY, MANY, note.key, "central.many_sources",
                                 {**note.detail, "n": self.sources_per_hour,
                                  "message": {"code": note.message,
                                              "params": {**note.detail, "site": note.site,
                                                         "agent": note.agent}}},
                                 note.count, note.severity)
                key = (note.kind, MANY, MANY, note.key)
            else:
                self._new_sources.append(now)
        last, held = self._last.get(key, (-1e18, 0))
        if now - last < self.interval_s:
            self._last[key] = (last, held + note.count)
            return None
        if len(self._last) > 4096:  # noqa: PLR2004 - bounded memory
            self._last = {k: v for k, v in self._last.items() if now - v[0] < self.interval_s}
        self._last[key] = (now, 0)
        return AlertNote(note.kind, note.site, note.agent, note.key, note.message, note.detail,
                         note.count + held, note.severity)


def write_rejections(cur: psycopg.Cursor[Any], rejections: list[Rejection],
                     body_bytes: int) -> None:
    """One `rejected` row each: truncated body, SHA-256 and size of the whole."""
    for r in rejections:
        cur.execute(
            "INSERT INTO rejected (topic, site, agent, kid, reason, body, body_sha256, body_size)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (printable(r.topic, 1024), printable(r.site) if r.site else "",
             r.agent and printable(r.agent), r.kid and printable(r.kid, 200),
             printable(r.reason, 1000), r.body[:body_bytes],
             hashlib.sha256(r.body).hexdigest(), len(r.body)),
        )


def raise_alerts(cur: psycopg.Cursor[Any], alerts: list[AlertNote]) -> None:
    """Insert or bump the open central alerts."""
    for a in alerts:
        cur.execute(RAISE_ALERT_N, (
            a.kind, printable(a.site), printable(a.agent), printable(a.key, 100),
            printable(a.message, 1000), orjson.dumps(a.detail).decode(), a.count, a.severity,
        ))


def record_conflicts(cur: psycopg.Cursor[Any], candidates: list[Verified]) -> int:
    """Envelopes not inserted because their seq is taken: keep those with other bytes.

    Returns how many conflicting envelopes were new evidence (each raises a critical alert).
    """
    if not candidates:
        return 0
    cur.execute(
        "SELECT e.site, e.agent, e.seq, e.payload_sha256 FROM envelopes e"
        " JOIN unnest(%s::text[], %s::text[], %s::bigint[]) AS c(site, agent, seq)"
        " ON e.site = c.site AND e.agent = c.agent AND e.seq = c.seq",
        ([c.site for c in candidates], [c.agent for c in candidates],
         [c.seq for c in candidates]),
    )
    stored = {(site, agent, int(seq)): sha for site, agent, seq, sha in cur.fetchall()}
    found = 0
    for c in candidates:
        kept = stored.get((c.site, c.agent, c.seq))
        if kept is None or kept == c.payload_sha256:
            continue  # a re-delivery or a replay: the same bytes
        cur.execute(
            "INSERT INTO conflicting_envelopes (site, agent, seq, stream, kid, topic,"
            " stored_sha256, payload_sha256, created, body) VALUES"
            " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (site, agent, seq, payload_sha256) DO NOTHING RETURNING id",
            (c.site, c.agent, c.seq, c.stream, c.kid, c.topic, kept, c.payload_sha256,
             c.created, c.body),
        )
        if cur.fetchone() is None:
            continue  # this conflicting envelope is already on record
        found += 1
        raise_alerts(cur, [AlertNote(
            "conflicting_envelope", c.site, c.agent, str(c.seq), "central.conflicting_envelope",
            {"seq": c.seq, "stored_sha256": kept, "other_sha256": c.payload_sha256,
             "kid": c.kid, "topic": c.topic},
            severity="critical",
        )])
    return found


def flag_seq_jumps(cur: psycopg.Cursor[Any], fresh: list[Verified], max_jump: int) -> None:
    """Alert when a new envelope's seq lies more than `max_jump` past the agent's stored seqs."""
    lowest: dict[tuple[str, str], Verified] = {}
    for e in fresh:
        known = lowest.get((e.site, e.agent))
        if known is None or e.seq < known.seq:
            lowest[(e.site, e.agent)] = e
    for (site, agent), e in lowest.items():
        if e.seq <= max_jump:
            continue
        cur.execute("SELECT max(seq) FROM envelopes WHERE site = %s AND agent = %s AND seq < %s",
                    (site, agent, e.seq))
        row = cur.fetchone()
        before = int(row[0]) if row and row[0] is not None else 0
        if e.seq - before > max_jump:
            raise_alerts(cur, [AlertNote(
                "implausible_envelope", site, agent, "seq_jump", "central.seq_jump",
                {"seq": e.seq, "previous": before, "max_jump": max_jump}, severity="critical",
            )])
