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

from agent.core.items import COLUMNS, QUALITIES
from central import evidence
from central.completeness import merge_ranges, runs
from central.envelope import Verified
from central.refusals import (
    AlertNote,
    Rejection,
    flag_seq_jumps,
    raise_alerts,
    record_conflicts,
    write_rejections,
)
from central.shipments import note_records

__all__ = ["Batch", "Rejection", "Store", "WriteResult", "connect"]

log = structlog.get_logger("isoedge.central.store")

_KNOWN_READING_KEYS = COLUMNS  # the item members with a column (agent/core/items.py)

_TEMP_TABLES = """
CREATE TEMP TABLE IF NOT EXISTS tmp_envelopes (
    site text, agent text, seq bigint, stream text, kid text, created timestamptz,
    payload_sha256 text, prev text, n_items integer, topic text, id_prefix text,
    id_first bigint) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS tmp_events (
    id text, site text, agent text, stream text, t timestamptz, body jsonb, seq bigint)
    ON COMMIT DELETE ROWS;
"""

ENV_COLS = ("site, agent, seq, stream, kid, created, payload_sha256, prev, n_items, topic,"
            " id_prefix, id_first")
ROW_COLS = ("site, series, pos, seq, t, value, quality, value_bool, value_text, nuclide,"
            " extra")
QUALITY = {q: code for code, q in enumerate(QUALITIES)}  # good 0, uncertain 1, bad 2
QUALITY_OTHER = 3  # the text itself goes to `extra`
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
class Batch:
    """What one transaction writes."""

    envelopes: list[Verified] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    statuses: list[tuple[str, str, bool, str]] = field(default_factory=list)
    alerts: list[AlertNote] = field(default_factory=list)  # rate-limited by the consumer

    def __bool__(self) -> bool:
        return bool(self.envelopes or self.rejections or self.statuses or self.alerts)


@dataclass(slots=True)
class WriteResult:
    """Counts of one committed batch."""

    envelopes_new: int
    readings: int
    events: int
    rejected: int


def connect(url: str, *, application_name: str = "isoedge-ingest",
            statement_timeout_ms: int = 60_000) -> psycopg.Connection[Any]:
    """A connection with bounded waits: connect timeout, TCP keepalive and user timeout.

    `statement_timeout_ms` 0 for the full scans of a rebuild.
    """
    return psycopg.connect(
        url,
        connect_timeout=10,
        keepalives=1,
        keepalives_idle=10,
        keepalives_interval=5,
        keepalives_count=3,
        tcp_user_timeout=30_000,
        application_name=application_name,
        options=f"-c statement_timeout={int(statement_timeout_ms)} -c TimeZone=UTC",
    )


class Store:
    """One writer connection (owned by one thread)."""

    def __init__(self, url: str, *, rejected_body_bytes: int = 4096,
                 max_seq_jump: int = 10**10) -> None:
        self.url = url
        self.rejected_body_bytes = rejected_body_bytes
        self.max_seq_jump = max_seq_jump
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
        items of envelopes that were new are written, by COPY straight into their tables
        (a reading is identified by its envelope and position, so the envelope's key is what
        makes a replay change nothing). An event id that exists already (an agent re-using
        ids: never seen in practice) makes that COPY fail; the batch is then written again
        with the events through a temporary table with ON CONFLICT.
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
                        cur, batch.envelopes, direct=direct, max_seq_jump=self.max_seq_jump
                    )
                write_rejections(cur, batch.rejections, self.rejected_body_bytes)
                raise_alerts(cur, batch.alerts)
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
                     direct: bool, max_seq_jump: int) -> tuple[int, int, int]:
    agents = sorted({(e.site, e.agent) for e in envelopes})
    _lock_agents(cur, agents)
    id_runs = [id_run(e.items) if e.stream == "readings" else None for e in envelopes]
    with cur.copy(f"COPY tmp_envelopes ({ENV_COLS}) FROM STDIN") as copy:
        for e, ids in zip(envelopes, id_runs, strict=True):
            copy.write_row((e.site, e.agent, e.seq, e.stream, e.kid, e.created,
                            e.payload_sha256, e.prev, len(e.items), e.topic,
                            *(ids or (None, None))))
    cur.execute(
        f"INSERT INTO envelopes ({ENV_COLS}) SELECT {ENV_COLS} FROM tmp_envelopes"  # noqa: S608
        " ON CONFLICT DO NOTHING RETURNING site, agent, seq"
    )
    new = {(site, agent, int(seq)) for site, agent, seq in cur.fetchall()}
    cur.execute("TRUNCATE tmp_envelopes")
    # Not inserted: a re-delivery (same bytes) or a conflict (other bytes), kept as evidence.
    firsts: set[tuple[str, str, int]] = set()
    taken: list[Verified] = []
    inserted: list[Verified] = []
    for e in envelopes:
        key = (e.site, e.agent, e.seq)
        if key in new and key not in firsts:
            firsts.add(key)
            inserted.append(e)
        else:
            taken.append(e)
    record_conflicts(cur, taken)
    flag_seq_jumps(cur, inserted, max_seq_jump)
    fresh: list[Verified] = []
    loose_ids: list[Verified] = []
    per_agent: dict[tuple[str, str], int] = {}
    for e, ids in zip(envelopes, id_runs, strict=True):
        key = (e.site, e.agent, e.seq)
        if key in new:
            new.discard(key)  # an envelope twice in one batch: its items once
            fresh.append(e)
            if e.stream == "readings":
                per_agent[(e.site, e.agent)] = per_agent.get((e.site, e.agent), 0) + len(e.items)
                if ids is None:
                    loose_ids.append(e)
    n_readings = _copy_readings(cur, [e for e in fresh if e.stream == "readings"], loose_ids)
    n_events = _copy_events(cur, [e for e in fresh if e.stream != "readings"], direct=direct)
    for e in fresh:
        if e.stream == "qc":  # shipments and receipts: matched across sites (central.shipments)
            note_records(cur, e.site, e.agent, e.items)
    _copy_evidence(cur, fresh)
    _maintain_completeness(cur, {(e.site, e.agent, e.seq) for e in fresh}, per_agent)
    return len(fresh), n_readings, n_events


def id_run(items: list[dict[str, Any]]) -> tuple[str, int] | None:
    """(prefix, first counter) when the items' ids are the agent's form, else None.

    The agent's form: one prefix and a 12-hex-digit counter, consecutive in item order. Then
    `prefix + %012x(first + pos)` gives every id back and no id needs a row of its own.
    """
    if not items:
        return None
    first = items[0]["id"]
    if len(first) <= 12:  # noqa: PLR2004 - the counter's width
        return None
    prefix, digits = first[:-12], first[-12:]
    try:
        start = int(digits, 16)
    except ValueError:
        return None
    for pos, it in enumerate(items):
        if it["id"] != f"{prefix}{start + pos:012x}":
            return None
    return prefix, start


def _series_ids(cur: psycopg.Cursor[Any], envelopes: list[Verified]) -> dict[tuple[str, ...], int]:
    """The number of each series of the batch (created on first sight), its latest time kept.

    The agents' rows are locked already, so writers never meet on a series row.
    """
    latest: dict[tuple[str, ...], str] = {}
    for e in envelopes:
        site, agent = e.site, e.agent
        for it in e.items:
            key = (site, agent, it["device"], it["channel"], it.get("unit") or "")
            if latest.get(key, "") < it["t"]:
                latest[key] = it["t"]
    rows = sorted(latest.items())
    cur.execute(
        "INSERT INTO series (site, agent, device, channel, unit, last_t)"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
        " %s::timestamptz[])"
        " ON CONFLICT (site, agent, device, channel, unit)"
        " DO UPDATE SET last_t = greatest(series.last_t, EXCLUDED.last_t)"
        " RETURNING site, agent, device, channel, unit, id",
        (*([k[i] for k, _t in rows] for i in range(5)), [t for _k, t in rows]),
    )
    return {tuple(r[:5]): int(r[5]) for r in cur.fetchall()}


def _copy_readings(cur: psycopg.Cursor[Any], envelopes: list[Verified],
                   loose_ids: list[Verified]) -> int:
    """COPY the readings of new envelopes into `reading_rows` (one narrow row each).

    The rows are written as COPY text built here (one string per envelope), not adapted
    value by value: the columns are integers, a float's repr, fixed flags and text escaped by
    `copy_text`, and this loop is the ingest's largest CPU cost per reading.
    """
    if not envelopes:
        return 0
    series = _series_ids(cur, envelopes)
    n = 0
    with cur.copy(f"COPY reading_rows ({ROW_COLS}) FROM STDIN") as copy:
        for e in envelopes:
            copy.write(_reading_rows_text(e, series))
            n += len(e.items)
    if loose_ids:
        with cur.copy("COPY item_ids (site, agent, seq, pos, id) FROM STDIN") as copy:
            for e in loose_ids:
                for pos, it in enumerate(e.items):
                    copy.write_row((e.site, e.agent, e.seq, pos, it["id"]))
    return n


def _reading_rows_text(e: Verified, series: dict[tuple[str, ...], int]) -> str:
    """The COPY text of one envelope's readings (`ROW_COLS`, one line each)."""
    dumps = orjson.dumps
    known = _KNOWN_READING_KEYS
    n_known = len(known)
    quality_code = QUALITY.get
    esc = copy_text
    cells = _value_cells
    site, agent, seq = e.site, e.agent, e.seq
    # JSON writes a backslash, tab, newline or CR in a string only as an escape that starts
    # with a backslash: a payload without one holds no text COPY must escape.
    plain = bool(e.payload) and b"\\" not in e.payload
    head = f"{esc(site)}\t"
    tail = f"\t{seq}\t"
    lines: list[str] = []
    add = lines.append
    for pos, it in enumerate(e.items):
        value = it.get("value")
        if type(value) is float:
            number, flag, text, other = repr(value), NULL, NULL, None
        else:
            number, flag, text, other = cells(value)
        quality = quality_code(it["quality"], QUALITY_OTHER)
        extra = NULL
        if (other is not None or quality == QUALITY_OTHER or len(it) > n_known
                or not known.issuperset(it)):
            more = {k: v for k, v in it.items() if k not in known} | (other or {})
            if quality == QUALITY_OTHER:
                more["quality"] = it["quality"]
            extra = esc(dumps(more).decode())
        nuclide = it.get("nuclide")
        if nuclide is None:
            nuclide = NULL
        elif not plain:
            nuclide = esc(nuclide)
        number_of = series[(site, agent, it["device"], it["channel"], it.get("unit") or "")]
        add(f"{head}{number_of}\t{pos}{tail}{it['t'] if plain else esc(it['t'])}\t"
            f"{number}\t{quality}\t{flag}\t{text}\t{nuclide}\t{extra}\n")
    return "".join(lines)


NULL = "\\N"  # COPY text's NULL
_NO_VALUE = (NULL, NULL, NULL, None)
_TRUE = (NULL, "t", NULL, None)
_FALSE = (NULL, "f", NULL, None)


def _value_cells(value: Any) -> tuple[str, str, str, dict[str, Any] | None]:
    """COPY text of (value, value_bool, value_text) and what goes to `extra` (`typed_value`)."""
    if value is None:
        return _NO_VALUE
    if value is True:
        return _TRUE
    if value is False:
        return _FALSE
    if isinstance(value, int | float):
        return repr(value), NULL, NULL, None
    if isinstance(value, str):
        return NULL, NULL, copy_text(value), None
    return NULL, NULL, NULL, {"value": value}

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_text(text: str) -> str:
    """`text` as one field of PostgreSQL's COPY text format (backslash, tab, newline, CR)."""
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        return text.translate(_COPY_ESCAPES)
    return text


def _copy_events(cur: psycopg.Cursor[Any], envelopes: list[Verified], *, direct: bool) -> int:
    """COPY the events of new envelopes.

    With `direct` False through a temporary table with ON CONFLICT (an event id seen before:
    an agent re-using ids).
    """
    if not envelopes:
        return 0
    n = 0
    table = "events" if direct else "tmp_events"
    with cur.copy(f"COPY {table} ({EVENT_COLS}) FROM STDIN") as copy:
        for e in envelopes:
            for index, it in enumerate(e.items):
                event_id = it.get("id") or f"{e.site}/{e.agent}/{e.seq}/{index}"
                copy.write_row((str(event_id), e.site, e.agent, e.stream, it.get("t"),
                                orjson.dumps(it).decode(), e.seq))
                n += 1
    if not direct:
        cur.execute(
            f"INSERT INTO events ({EVENT_COLS}) SELECT {EVENT_COLS}"  # noqa: S608
            " FROM tmp_events ON CONFLICT DO NOTHING"
        )
    return n


def _copy_evidence(cur: psycopg.Cursor[Any], envelopes: list[Verified]) -> None:
    """The signed JWS of each new envelope, compressed (one twice in `envelopes`: once)."""
    seen: set[tuple[str, str, int]] = set()
    with cur.copy("COPY evidence (site, agent, seq, jws_zlib) FROM STDIN") as copy:
        for e in envelopes:
            key = (e.site, e.agent, e.seq)
            if key in seen or not e.body:
                continue
            seen.add(key)
            copy.write_row((e.site, e.agent, e.seq,
                            evidence.pack_verified(e.members, e.payload, e.body)))


def _lock_agents(cur: psycopg.Cursor[Any], agents: list[tuple[str, str]]) -> None:
    """Take the row of each agent of the batch, in one order (no deadlock between writers).

    Writers of one agent thus take turns, so the ranges and chain joins each one derives from
    what is stored are never computed from a state another transaction is changing.
    """
    sites, names = [a[0] for a in agents], [a[1] for a in agents]
    cur.execute(
        "INSERT INTO agent_record (site, agent) SELECT * FROM unnest(%s::text[], %s::text[])"
        " ON CONFLICT DO NOTHING",
        (sites, names),
    )
    cur.execute(
        "SELECT 1 FROM agent_record a JOIN unnest(%s::text[], %s::text[]) AS k(site, agent)"
        " ON a.site = k.site AND a.agent = k.agent ORDER BY a.site, a.agent FOR UPDATE OF a",
        (sites, names),
    )


def _maintain_completeness(cur: psycopg.Cursor[Any], new: set[tuple[str, str, int]],
                           readings: dict[tuple[str, str], int]) -> None:
    """Fold the batch's new envelopes into `agent_record`, `seq_ranges` and `chain_breaks`."""
    if not new and not readings:
        return
    by_agent: dict[tuple[str, str], list[int]] = {}
    for site, agent, seq in new:
        by_agent.setdefault((site, agent), []).append(seq)
    keys = sorted(set(by_agent) | set(readings))
    spans = {k: (min(v), max(v)) for k, v in by_agent.items()}
    cur.execute(
        "UPDATE agent_record a SET envelopes = a.envelopes + u.n,"
        " readings = a.readings + u.r, first_seq = least(a.first_seq, u.lo),"
        " last_seq = greatest(a.last_seq, u.hi),"
        " last_seen = CASE WHEN u.n > 0 THEN greatest(a.last_seen, now()) ELSE a.last_seen END"
        " FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::bigint[],"
        " %s::bigint[]) AS u(site, agent, n, r, lo, hi)"
        " WHERE a.site = u.site AND a.agent = u.agent",
        ([k[0] for k in keys], [k[1] for k in keys], [len(by_agent.get(k, [])) for k in keys],
         [readings.get(k, 0) for k in keys], [spans.get(k, (None, None))[0] for k in keys],
         [spans.get(k, (None, None))[1] for k in keys]),
    )
    if not by_agent:
        return
    # The stored ranges touching the batch's span are taken out and put back merged.
    agents = sorted(by_agent)
    cur.execute(
        "DELETE FROM seq_ranges r USING unnest(%s::text[], %s::text[], %s::bigint[],"
        " %s::bigint[]) AS s(site, agent, lo, hi)"
        " WHERE r.site = s.site AND r.agent = s.agent AND r.hi >= s.lo - 1 AND r.lo <= s.hi + 1"
        " RETURNING r.site, r.agent, r.lo, r.hi",
        ([k[0] for k in agents], [k[1] for k in agents], [spans[k][0] for k in agents],
         [spans[k][1] for k in agents]),
    )
    old: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for site, agent, lo, hi in cur.fetchall():
        old.setdefault((site, agent), []).append((int(lo), int(hi)))
    rows = [
        (*key, lo, hi)
        for key in agents
        for lo, hi in merge_ranges(old.get(key, []) + runs(by_agent[key]))
    ]
    cur.execute(
        "INSERT INTO seq_ranges (site, agent, lo, hi)"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[])",
        ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows]),
    )
    # Chain joins the batch made: each new envelope with its predecessor and its successor.
    joins = sorted({(s, a, q) for s, a, seq in new for q in (seq, seq + 1)})
    cur.execute(
        "INSERT INTO chain_breaks (site, agent, seq)"
        " SELECT e.site, e.agent, e.seq"
        " FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS k(site, agent, seq)"
        " JOIN envelopes e ON e.site = k.site AND e.agent = k.agent AND e.seq = k.seq"
        " LEFT JOIN envelopes p ON p.site = e.site AND p.agent = e.agent AND p.seq = e.seq - 1"
        " WHERE (e.seq = 1 AND e.prev <> '')"
        "    OR (p.seq IS NOT NULL AND e.prev <> p.payload_sha256)"
        " ON CONFLICT DO NOTHING",
        ([j[0] for j in joins], [j[1] for j in joins], [j[2] for j in joins]),
    )


def typed_value(value: Any) -> tuple[float | None, bool | None, str | None,
                                     dict[str, Any] | None]:
    """(number, boolean, text, other) of a reading's value: at most one is not None.

    docs/contract.md §3: a value is a number, a boolean or a short text (or null for a `bad`
    reading). Anything else is outside the contract; it is kept in `extra`, not lost.
    """
    if value is None:
        return None, None, None, None
    if value is True or value is False:
        return None, value, None, None
    if isinstance(value, int | float):
        return value, None, None, None
    if isinstance(value, str):
        return None, None, value, None
    return None, None, None, {"value": value}
