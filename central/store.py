"""Writes verified envelopes to PostgreSQL: one transaction per batch, COPY + ON CONFLICT.

Rows go by COPY into session-local temporary tables and from there into the real ones with
`INSERT ... ON CONFLICT DO NOTHING`, so a re-delivered or replayed envelope changes nothing and
one batch costs a handful of statements however many readings it holds.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
import structlog

from central.envelope import Verified

log = structlog.get_logger("isoedge.central.store")

_KNOWN_READING_KEYS = frozenset(
    {"id", "device", "channel", "t", "value", "unit", "quality", "nuclide", "raw"}
)

_TEMP_TABLES = """
CREATE TEMP TABLE IF NOT EXISTS tmp_envelopes (
    site text, agent text, seq bigint, stream text, kid text, created timestamptz,
    payload_sha256 text, prev text, n_items integer, topic text) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS tmp_readings (
    id text, site text, agent text, device text, channel text, t timestamptz,
    value double precision, unit text, quality text, nuclide text, raw jsonb, seq bigint,
    extra jsonb) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS tmp_events (
    id text, site text, agent text, stream text, t timestamptz, body jsonb, seq bigint)
    ON COMMIT DELETE ROWS;
"""

ENV_COLS = "site, agent, seq, stream, kid, created, payload_sha256, prev, n_items, topic"
READ_COLS = "id, site, agent, device, channel, t, value, unit, quality, nuclide, raw, seq, extra"
EVENT_COLS = "id, site, agent, stream, t, body, seq"

RAISE_ALERT = """
INSERT INTO central_alerts (kind, site, agent, key, message, detail)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (kind, site, agent, key) WHERE cleared IS NULL
DO UPDATE SET count = central_alerts.count + 1, updated = now(), message = EXCLUDED.message,
              detail = EXCLUDED.detail
"""

# For states re-checked every cycle (gaps, chain): raised once, refreshed only when it changes.
REFRESH_ALERT = """
INSERT INTO central_alerts (kind, site, agent, key, message, detail)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (kind, site, agent, key) WHERE cleared IS NULL
DO UPDATE SET updated = now(), message = EXCLUDED.message, detail = EXCLUDED.detail
WHERE central_alerts.detail IS DISTINCT FROM EXCLUDED.detail
"""


# The last VERIFIED evidence of an agent (central/status.py) is kept: a newer verified one
# replaces it; an unsigned status, or an older signed one played again, changes only the
# display members (state, devices, ...), never archive, unsent_from, last_seq or calibrators.
STATUS_UPSERT = """
INSERT INTO agent_status AS old (site, agent, online, body) VALUES (%s, %s, %s, %s)
ON CONFLICT (site, agent) DO UPDATE SET online = EXCLUDED.online, received = now(),
body = CASE
  WHEN COALESCE((old.body->'evidence'->>'verified')::boolean, false)
       AND NOT (COALESCE((EXCLUDED.body->'evidence'->>'verified')::boolean, false)
                AND EXCLUDED.body->'evidence'->>'t' >= old.body->'evidence'->>'t')
  THEN EXCLUDED.body || jsonb_build_object(
       'archive', old.body->'archive', 'unsent_from', old.body->'unsent_from',
       'last_seq', old.body->'last_seq', 'calibrators', old.body->'calibrators',
       'evidence', old.body->'evidence')
  ELSE EXCLUDED.body
END
"""


@dataclass(slots=True)
class Rejection:
    """An envelope refused as data."""

    topic: str
    site: str | None
    agent: str | None
    kid: str | None
    reason: str
    body: bytes


@dataclass(slots=True)
class Batch:
    """What one transaction writes."""

    envelopes: list[Verified] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    statuses: list[tuple[str, str, bool, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.envelopes or self.rejections or self.statuses)


@dataclass(slots=True)
class WriteResult:
    """Counts of one committed batch."""

    envelopes_new: int
    readings: int
    events: int
    rejected: int


def connect(url: str, *, application_name: str = "isoedge-ingest") -> psycopg.Connection[Any]:
    """A connection with bounded waits: connect timeout, TCP keepalive and user timeout."""
    return psycopg.connect(
        url,
        connect_timeout=10,
        keepalives=1,
        keepalives_idle=10,
        keepalives_interval=5,
        keepalives_count=3,
        tcp_user_timeout=30_000,
        application_name=application_name,
        options="-c statement_timeout=60000 -c TimeZone=UTC",
    )


class Store:
    """One writer connection (owned by one thread)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: psycopg.Connection[Any] | None = None

    def open(self) -> None:
        """(Re)connect and create the temporary tables of this session."""
        self.close()
        conn = connect(self.url)
        conn.execute(_TEMP_TABLES)
        conn.commit()
        self.conn = conn

    def close(self) -> None:
        """Close the connection, ignoring errors of a dead one."""
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
            self.conn = None

    def write(self, batch: Batch) -> WriteResult:
        """Write one batch in one transaction (committed when this returns).

        The envelopes go in first (ON CONFLICT DO NOTHING RETURNING the new ones); only the
        items of envelopes that were new are written, by COPY straight into their tables. An
        item id that exists already (an agent re-using ids: never seen in practice) makes that
        COPY fail; the batch is then written again through temporary tables with ON CONFLICT.
        """
        try:
            return self._write(batch, direct=True)
        except psycopg.errors.UniqueViolation:
            return self._write(batch, direct=False)

    def _write(self, batch: Batch, *, direct: bool) -> WriteResult:
        if self.conn is None or self.conn.closed:
            self.open()
        conn = self.conn
        assert conn is not None  # noqa: S101 - set by open()
        n_readings = n_events = new_envelopes = 0
        try:
            with conn.cursor() as cur:
                if batch.envelopes:
                    new_envelopes, n_readings, n_events = _write_envelopes(
                        cur, batch.envelopes, direct=direct
                    )
                for r in batch.rejections:
                    cur.execute(
                        "INSERT INTO rejected (topic, site, agent, kid, reason, body)"
                        " VALUES (%s, %s, %s, %s, %s, %s)",
                        (r.topic, r.site, r.agent, r.kid, r.reason, r.body),
                    )
                    cur.execute(
                        RAISE_ALERT,
                        (
                            "rejected_envelope", r.site or "", r.agent or "",
                            r.reason.split(" (")[0],
                            f"envelope rejected on {r.topic}: {r.reason}",
                            orjson.dumps({"topic": r.topic, "kid": r.kid}).decode(),
                        ),
                    )
                for site, agent, online, body in batch.statuses:
                    cur.execute(STATUS_UPSERT, (site, agent, online, body))
            conn.commit()
        except BaseException:
            try:
                conn.rollback()
            except psycopg.Error:
                self.close()
            raise
        return WriteResult(new_envelopes, n_readings, n_events, len(batch.rejections))


def _write_envelopes(cur: psycopg.Cursor[Any], envelopes: list[Verified], *,
                     direct: bool) -> tuple[int, int, int]:
    with cur.copy(f"COPY tmp_envelopes ({ENV_COLS}) FROM STDIN") as copy:
        for e in envelopes:
            copy.write_row((e.site, e.agent, e.seq, e.stream, e.kid, e.created,
                            e.payload_sha256, e.prev, len(e.items), e.topic))
    cur.execute(
        f"INSERT INTO envelopes ({ENV_COLS}) SELECT {ENV_COLS} FROM tmp_envelopes"  # noqa: S608
        " ON CONFLICT DO NOTHING RETURNING site, agent, seq"
    )
    new = {(site, agent, int(seq)) for site, agent, seq in cur.fetchall()}
    cur.execute("TRUNCATE tmp_envelopes")
    if not direct:
        n_readings, n_events = _copy_items(cur, envelopes, "tmp_")
        if n_readings:
            cur.execute(
                f"INSERT INTO readings ({READ_COLS}) SELECT {READ_COLS}"  # noqa: S608
                " FROM tmp_readings ON CONFLICT DO NOTHING"
            )
        if n_events:
            cur.execute(
                f"INSERT INTO events ({EVENT_COLS}) SELECT {EVENT_COLS}"  # noqa: S608
                " FROM tmp_events ON CONFLICT DO NOTHING"
            )
        return len(new), n_readings, n_events
    fresh: list[Verified] = []
    for e in envelopes:
        key = (e.site, e.agent, e.seq)
        if key in new:
            new.discard(key)  # an envelope twice in one batch: its items once
            fresh.append(e)
    n_readings, n_events = _copy_items(cur, fresh, "")
    return len(fresh), n_readings, n_events


def _copy_items(cur: psycopg.Cursor[Any], envelopes: list[Verified],
               prefix: str) -> tuple[int, int]:
    """COPY the items into `{prefix}readings` / `{prefix}events`."""
    n_readings = n_events = 0
    readings = [e for e in envelopes if e.stream == "readings"]
    if readings:
        dumps = orjson.dumps
        with cur.copy(f"COPY {prefix}readings ({READ_COLS}) FROM STDIN") as copy:
            write = copy.write_row
            known = _KNOWN_READING_KEYS
            for e in readings:
                site, agent, seq = e.site, e.agent, e.seq
                for it in e.items:
                    raw = it.get("raw")
                    extra = None
                    if len(it) > len(known) or not known.issuperset(it):
                        extra = dumps({k: v for k, v in it.items() if k not in known}).decode()
                    write((
                        it["id"], site, agent, it["device"], it["channel"], it["t"],
                        it.get("value"), it.get("unit"), it["quality"], it.get("nuclide"),
                        None if raw is None else dumps(raw).decode(), seq, extra,
                    ))
                    n_readings += 1
    events = [e for e in envelopes if e.stream != "readings"]
    if events:
        with cur.copy(f"COPY {prefix}events ({EVENT_COLS}) FROM STDIN") as copy:
            for e in events:
                for index, it in enumerate(e.items):
                    event_id = it.get("id") or f"{e.site}/{e.agent}/{e.seq}/{index}"
                    copy.write_row((str(event_id), e.site, e.agent, e.stream, it.get("t"),
                                    orjson.dumps(it).decode(), e.seq))
                    n_events += 1
    return n_readings, n_events
