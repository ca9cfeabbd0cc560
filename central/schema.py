"""The ingest's PostgreSQL schema, created and migrated by the ingest itself (versioned).

Each migration runs once, in order, inside one transaction that also records its version in
`schema_version`; an advisory lock makes concurrent ingest processes wait for each other, so
two processes starting together never both migrate.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime

import psycopg
import structlog
from psycopg import sql

from central.completeness import rebuild

log = structlog.get_logger("isoedge.central.schema")

_LOCK_KEY = 0x15_0ED6E  # pg_advisory_xact_lock key of the migration

# Version 1: the tables of docs/contract.md §6 plus what completeness and repair need.
_V1 = """
CREATE TABLE envelopes (
    site text NOT NULL,
    agent text NOT NULL,
    seq bigint NOT NULL,
    stream text NOT NULL,
    kid text NOT NULL,
    created timestamptz NOT NULL,
    received timestamptz NOT NULL DEFAULT now(),
    payload_sha256 text NOT NULL,
    prev text NOT NULL,
    n_items integer NOT NULL,
    topic text NOT NULL,
    PRIMARY KEY (site, agent, seq)
);
CREATE TABLE readings (
    id text NOT NULL,
    site text NOT NULL,
    agent text NOT NULL,
    device text NOT NULL,
    channel text NOT NULL,
    t timestamptz NOT NULL,
    value double precision,
    unit text,
    quality text NOT NULL,
    nuclide text,
    raw jsonb,
    seq bigint NOT NULL,
    extra jsonb
);
CREATE TABLE events (
    id text PRIMARY KEY,
    site text NOT NULL,
    agent text NOT NULL,
    stream text NOT NULL,
    t timestamptz,
    body jsonb NOT NULL,
    seq bigint NOT NULL
);
CREATE INDEX events_site_agent_stream ON events (site, agent, stream, t);
CREATE TABLE rejected (
    id bigserial PRIMARY KEY,
    received timestamptz NOT NULL DEFAULT now(),
    topic text NOT NULL,
    site text,
    agent text,
    kid text,
    reason text NOT NULL,
    body bytea NOT NULL
);
CREATE TABLE central_alerts (
    id bigserial PRIMARY KEY,
    kind text NOT NULL,
    site text NOT NULL DEFAULT '',
    agent text NOT NULL DEFAULT '',
    key text NOT NULL DEFAULT '',
    message text NOT NULL,
    detail jsonb,
    count integer NOT NULL DEFAULT 1,
    raised timestamptz NOT NULL DEFAULT now(),
    updated timestamptz NOT NULL DEFAULT now(),
    cleared timestamptz
);
CREATE UNIQUE INDEX central_alerts_open ON central_alerts (kind, site, agent, key)
    WHERE cleared IS NULL;
CREATE TABLE gaps (
    site text NOT NULL,
    agent text NOT NULL,
    from_seq bigint NOT NULL,
    to_seq bigint NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_request timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    state text NOT NULL DEFAULT 'open',
    PRIMARY KEY (site, agent, from_seq, to_seq)
);
CREATE TABLE agent_status (
    site text NOT NULL,
    agent text NOT NULL,
    online boolean NOT NULL,
    body jsonb NOT NULL,
    received timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, agent)
);
"""

# Plain tables: readings are unique by id. A TimescaleDB hypertable needs its time column in
# every unique index, so there the key is (id, t): a re-delivered reading has the same t, so
# ON CONFLICT still makes a replay change nothing.
_READINGS_PLAIN = """
ALTER TABLE readings ADD PRIMARY KEY (id);
CREATE INDEX readings_device_t ON readings (site, agent, device, t);
"""
_READINGS_TIMESCALE = """
CREATE EXTENSION IF NOT EXISTS timescaledb;
ALTER TABLE readings ADD PRIMARY KEY (id, t);
SELECT create_hypertable('readings', 't', chunk_time_interval => INTERVAL '1 day');
CREATE INDEX readings_device_t ON readings (site, agent, device, t);
"""

# Version 2: every value the contract allows (docs/contract.md §3: a number, a boolean or a short
# text). `value` keeps numbers; booleans and text go to their own columns (at most one of the
# three is set; all null for a `bad` reading without a value).
_V2 = """
ALTER TABLE readings ADD COLUMN value_bool boolean, ADD COLUMN value_text text;
"""

# Version 3: completeness maintained by the writers in the transaction of the envelopes
# (central.completeness): per agent its counts, its stored seq ranges and its chain breaks.
_V3 = """
CREATE TABLE agent_record (
    site text NOT NULL,
    agent text NOT NULL,
    envelopes bigint NOT NULL DEFAULT 0,
    readings bigint NOT NULL DEFAULT 0,
    first_seq bigint,
    last_seq bigint,
    last_seen timestamptz,
    PRIMARY KEY (site, agent)
);
CREATE TABLE seq_ranges (
    site text NOT NULL,
    agent text NOT NULL,
    lo bigint NOT NULL,
    hi bigint NOT NULL,
    PRIMARY KEY (site, agent, lo)
);
CREATE TABLE chain_breaks (
    site text NOT NULL,
    agent text NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (site, agent, seq)
);
"""

# Version 4: the signed evidence. The JWS of each stored envelope as received, zlib-compressed,
# so `isoedge ingest verify-stored` can re-verify the record against the agents' keys years
# later. Envelopes stored before version 4 have none (verify-stored says so).
_V4 = """
CREATE TABLE evidence (
    site text NOT NULL,
    agent text NOT NULL,
    seq bigint NOT NULL,
    jws_zlib bytea NOT NULL,
    PRIMARY KEY (site, agent, seq)
);
"""

# Version 5: the series of the record (site, agent, device, channel, unit), maintained by the
# writers, so the fleet page lists devices from a small table instead of scanning readings.
_V5 = """
CREATE TABLE series (
    id integer GENERATED ALWAYS AS IDENTITY UNIQUE,
    site text NOT NULL,
    agent text NOT NULL,
    device text NOT NULL,
    channel text NOT NULL,
    unit text NOT NULL DEFAULT '',
    last_t timestamptz,
    PRIMARY KEY (site, agent, device, channel, unit)
);
INSERT INTO series (site, agent, device, channel, unit, last_t)
SELECT site, agent, device, channel, coalesce(unit, ''), max(t)
FROM readings GROUP BY 1, 2, 3, 4, 5;
"""

# Version 6: the narrow, partitioned record. `reading_rows` holds one row per reading without
# text repeated per row: the series (site, agent, device, channel, unit) by its number, the
# envelope's seq and the item's position in it (which identify the reading), quality as a code,
# the value in the column of its type. Partitioned by day on `t` (created ahead; a default
# partition takes what falls outside). The item ids: an agent's ids are a prefix and a counter,
# consecutive within an envelope, so the envelope keeps the prefix and the first counter; other
# ids go to `item_ids`. `raw` is kept in the signed evidence only. The view `readings` shows
# the record in the columns of docs/contract.md §6.
_V6 = """
ALTER TABLE envelopes ADD COLUMN id_prefix text, ADD COLUMN id_first bigint;
CREATE INDEX envelopes_ids ON envelopes (id_prefix, id_first) WHERE id_prefix IS NOT NULL;
CREATE TABLE item_ids (
    site text NOT NULL,
    agent text NOT NULL,
    seq bigint NOT NULL,
    pos integer NOT NULL,
    id text NOT NULL,
    PRIMARY KEY (site, agent, seq, pos)
);
CREATE INDEX item_ids_id ON item_ids (id);
CREATE TABLE reading_rows (
    series integer NOT NULL,
    pos integer NOT NULL,
    seq bigint NOT NULL,
    t timestamptz NOT NULL,
    value double precision,
    quality smallint NOT NULL,
    value_bool boolean,
    value_text text,
    nuclide text,
    extra jsonb
) PARTITION BY RANGE (t);
CREATE TABLE reading_rows_default PARTITION OF reading_rows DEFAULT;
CREATE INDEX reading_rows_series_t ON reading_rows (series, t);
CREATE INDEX reading_rows_t ON reading_rows USING brin (t);
CREATE SCHEMA IF NOT EXISTS archive;
INSERT INTO series (site, agent, device, channel, unit, last_t)
SELECT site, agent, device, channel, coalesce(unit, ''), max(t)
FROM readings GROUP BY 1, 2, 3, 4, 5
ON CONFLICT (site, agent, device, channel, unit)
DO UPDATE SET last_t = greatest(series.last_t, EXCLUDED.last_t);
INSERT INTO reading_rows (series, pos, seq, t, value, quality, value_bool, value_text, nuclide,
                          extra)
SELECT s.id, r.pos, r.seq, r.t, r.value,
       CASE r.quality WHEN 'good' THEN 0 WHEN 'uncertain' THEN 1 WHEN 'bad' THEN 2 ELSE 3 END,
       r.value_bool, r.value_text, r.nuclide,
       CASE WHEN r.quality IN ('good', 'uncertain', 'bad') THEN r.extra
            ELSE coalesce(r.extra, '{}') || jsonb_build_object('quality', r.quality) END
FROM (SELECT *, (row_number() OVER (PARTITION BY site, agent, seq ORDER BY t, id) - 1)::integer
             AS pos FROM readings) r
JOIN series s ON s.site = r.site AND s.agent = r.agent AND s.device = r.device
             AND s.channel = r.channel AND s.unit = coalesce(r.unit, '');
INSERT INTO item_ids (site, agent, seq, pos, id)
SELECT site, agent, seq,
       (row_number() OVER (PARTITION BY site, agent, seq ORDER BY t, id) - 1)::integer, id
FROM readings;
ALTER TABLE readings RENAME TO readings_v5;
CREATE VIEW readings AS
SELECT coalesce(e.id_prefix || lpad(to_hex(e.id_first + r.pos), 12, '0'), i.id) AS id,
       s.site, s.agent, s.device, s.channel, r.t, r.value, r.value_bool, r.value_text,
       nullif(s.unit, '') AS unit,
       CASE r.quality WHEN 0 THEN 'good' WHEN 1 THEN 'uncertain' WHEN 2 THEN 'bad'
            ELSE r.extra->>'quality' END AS quality,
       r.nuclide, r.seq, r.pos, r.extra
FROM reading_rows r
JOIN series s ON s.id = r.series
JOIN envelopes e ON e.site = s.site AND e.agent = s.agent AND e.seq = r.seq
LEFT JOIN item_ids i ON i.site = s.site AND i.agent = s.agent AND i.seq = r.seq
                    AND i.pos = r.pos;
"""

SCHEMA_VERSION = 9
PARTITION_DAYS_AHEAD = 7


def ensure_partitions(conn: psycopg.Connection[tuple[object, ...]],
                      days_ahead: int = PARTITION_DAYS_AHEAD) -> list[str]:
    """Daily partitions of `reading_rows` from yesterday to `days_ahead`; the ones created.

    A day whose rows already went to the default partition (readings that arrived before their
    partition existed) is left to the default partition.
    """
    created = []
    with conn.transaction():
        for offset in range(-1, days_ahead + 1):
            row = conn.execute(
                "SELECT (current_date + %s)::date, (current_date + %s + 1)::date",
                (offset, offset),
            ).fetchone()
            if row is None:
                continue
            day, after = row
            name = f"reading_rows_p{day:%Y%m%d}"
            exists = conn.execute(
                "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relname = %s AND n.nspname IN ('public', 'archive')", (name,)
            ).fetchone()
            if exists:
                continue
            try:
                with conn.transaction():
                    conn.execute(sql.SQL(
                        "CREATE TABLE {} PARTITION OF reading_rows FOR VALUES FROM ({}) TO ({})"
                    ).format(sql.Identifier(name), sql.Literal(day), sql.Literal(after)))
            except psycopg.errors.CheckViolation:
                log.warning("readings of this day are in the default partition", day=str(day))
                continue
            created.append(name)
    return created


def archive_partitions(conn: psycopg.Connection[tuple[object, ...]], before: date) -> list[str]:
    """Detach the daily partitions wholly before `before` (a date) into schema `archive`.

    Nothing is deleted: the tables stay in the database (dump them to cold storage with
    pg_dump -n archive), out of the live record's scans. Returns the tables moved.
    """
    moved = []
    with conn.transaction():
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'reading_rows'"
            " AND c.relname ~ '^reading_rows_p[0-9]{8}$' ORDER BY 1"
        ).fetchall()
        for row in rows:
            name = str(row[0])
            day = datetime.strptime(name[-8:], "%Y%m%d").replace(tzinfo=UTC).date()
            if day >= before:
                continue
            conn.execute(sql.SQL("ALTER TABLE reading_rows DETACH PARTITION {}").format(
                sql.Identifier(name)))
            conn.execute(sql.SQL("ALTER TABLE {} SET SCHEMA archive").format(
                sql.Identifier(name)))
            moved.append(f"archive.{name}")
    return moved

# Version 7 (trust at the boundaries, docs/security.md): rejected bodies are kept truncated
# with the hash and size of the whole; alerts carry a severity; a validly signed envelope that
# claims a stored seq with other bytes is kept as evidence.
_V7 = """
ALTER TABLE rejected ADD COLUMN body_sha256 text, ADD COLUMN body_size integer;
ALTER TABLE central_alerts ADD COLUMN severity text NOT NULL DEFAULT 'warning';
CREATE TABLE conflicting_envelopes (
    id bigserial PRIMARY KEY,
    received timestamptz NOT NULL DEFAULT now(),
    site text NOT NULL,
    agent text NOT NULL,
    seq bigint NOT NULL,
    stream text NOT NULL,
    kid text NOT NULL,
    topic text NOT NULL,
    stored_sha256 text NOT NULL,
    payload_sha256 text NOT NULL,
    created text NOT NULL,
    body bytea NOT NULL,
    UNIQUE (site, agent, seq, payload_sha256)
);
"""


# Version 8: shipments reconciled across sites (central/shipments.py): one row per shipment,
# keyed by the sending site, filled from the sender's shipment record and the receiver's
# receipt as they arrive, decided by the check cycle.
_V8 = """
CREATE TABLE shipments (
    site text NOT NULL,
    shipment_id text NOT NULL,
    agent text,
    record_id text,
    destination_site text,
    batch_id text,
    product text,
    nuclide text,
    activity_mbq double precision,
    reference_time timestamptz,
    shipped timestamptz,
    receipt_site text,
    receipt_agent text,
    receipt_id text,
    measured_mbq double precision,
    measured_at timestamptz,
    received timestamptz,
    reported_expected_mbq double precision,
    expected_mbq double precision,
    difference_pct double precision,
    tolerance_pct double precision,
    state text NOT NULL DEFAULT 'awaiting',
    checked timestamptz,
    updated timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, shipment_id)
);
CREATE INDEX shipments_open ON shipments (state)
    WHERE checked IS NULL OR state IN ('awaiting', 'no_shipment');
"""


def _v8(conn: Conn) -> None:
    from central.shipments import backfill  # noqa: PLC0415 - the migration's only use

    conn.execute(_V8)
    backfill(conn)


# Version 9: ready for distribution by site (Citus, docs/fleet.md). Every table of the record
# has a `site` column and every primary key and unique constraint includes it, so each can be
# distributed on `site` with its rows and their uniqueness kept on one node: events are keyed
# (site, id); rejected, central_alerts and conflicting_envelopes (site, id); series' number is
# unique per site; reading_rows carries the site of its series. `schema_version` is the one
# table without a site: on Citus it is a reference table (docs/fleet.md).
CITUS_REFERENCE_TABLES = frozenset({"schema_version"})
_V9 = """
ALTER TABLE events DROP CONSTRAINT events_pkey, ADD PRIMARY KEY (site, id);
UPDATE rejected SET site = '' WHERE site IS NULL;
ALTER TABLE rejected ALTER COLUMN site SET DEFAULT '', ALTER COLUMN site SET NOT NULL,
    DROP CONSTRAINT rejected_pkey, ADD PRIMARY KEY (site, id);
ALTER TABLE central_alerts DROP CONSTRAINT central_alerts_pkey, ADD PRIMARY KEY (site, id);
ALTER TABLE conflicting_envelopes DROP CONSTRAINT conflicting_envelopes_pkey,
    ADD PRIMARY KEY (site, id);
ALTER TABLE series DROP CONSTRAINT series_id_key, ADD CONSTRAINT series_site_id_key
    UNIQUE (site, id);
ALTER TABLE reading_rows ADD COLUMN site text;
UPDATE reading_rows r SET site = s.site FROM series s WHERE s.id = r.series;
ALTER TABLE reading_rows ALTER COLUMN site SET NOT NULL;
CREATE OR REPLACE VIEW readings AS
SELECT coalesce(e.id_prefix || lpad(to_hex(e.id_first + r.pos), 12, '0'), i.id) AS id,
       s.site, s.agent, s.device, s.channel, r.t, r.value, r.value_bool, r.value_text,
       nullif(s.unit, '') AS unit,
       CASE r.quality WHEN 0 THEN 'good' WHEN 1 THEN 'uncertain' WHEN 2 THEN 'bad'
            ELSE r.extra->>'quality' END AS quality,
       r.nuclide, r.seq, r.pos, r.extra
FROM reading_rows r
JOIN series s ON s.site = r.site AND s.id = r.series
JOIN envelopes e ON e.site = s.site AND e.agent = s.agent AND e.seq = r.seq
LEFT JOIN item_ids i ON i.site = s.site AND i.agent = s.agent AND i.seq = r.seq
                    AND i.pos = r.pos;
"""


def _v9(conn: Conn) -> None:
    conn.execute(_V9)
    legacy = conn.execute("SELECT to_regclass('readings_v5') IS NOT NULL").fetchone()
    if legacy and legacy[0]:  # the wide table an older record kept beside the new one
        conn.execute("ALTER TABLE readings_v5 DROP CONSTRAINT IF EXISTS readings_pkey,"
                     " ADD PRIMARY KEY (site, id, t)")


def timescale_available(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    """Whether the server offers the timescaledb extension."""
    row = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    return row is not None


Conn = psycopg.Connection[tuple[object, ...]]


def _v3(conn: Conn) -> None:
    conn.execute(_V3)
    rebuild(conn)  # an existing record: its completeness computed once, here


def _v6(conn: Conn) -> None:
    conn.execute(_V6)
    empty = conn.execute("SELECT NOT EXISTS (SELECT 1 FROM readings_v5)").fetchone()
    if empty and empty[0]:
        conn.execute("DROP TABLE readings_v5")  # a new database: nothing to keep


_STEPS: list[tuple[int, str, Callable[[Conn], object]]] = [
    (2, "readings: boolean and text values", lambda c: c.execute(_V2)),
    (3, "completeness maintained per agent", _v3),
    (4, "signed evidence kept (compressed JWS)", lambda c: c.execute(_V4)),
    (5, "series of the record", lambda c: c.execute(_V5)),
    (6, "narrow, partitioned record; readings is a view", _v6),
    (7, "rejected bodies truncated with hash, alert severity, conflicts (docs/security.md)",
     lambda c: c.execute(_V7)),
    (8, "shipments reconciled across sites", _v8),
    (9, "every key includes site (ready for distribution by site)", _v9),
]


def migrate(conn: psycopg.Connection[tuple[object, ...]], *, timescaledb: bool = True) -> int:
    """Bring the schema to `SCHEMA_VERSION`; returns the version found before."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version integer PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now(),"
            " note text NOT NULL)"
        )
        row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        found = int(row[0]) if row else 0  # type: ignore[call-overload]
        if found < 1:
            use_ts = timescaledb and timescale_available(conn)
            conn.execute(_V1)
            if use_ts:
                try:
                    with conn.transaction():  # a savepoint: plain tables if this fails
                        conn.execute(_READINGS_TIMESCALE)
                except psycopg.Error as exc:
                    # Installed but not loaded (shared_preload_libraries), or not permitted.
                    log.warning("timescaledb unusable; plain tables", error=str(exc).strip())
                    use_ts = False
            if not use_ts:
                conn.execute(_READINGS_PLAIN)
            conn.execute(
                "INSERT INTO schema_version (version, note) VALUES (1, %s)",
                ("tables of CONTRACT §6" + (" (timescaledb)" if use_ts else " (plain)"),),
            )
            log.info("schema created", version=1, timescaledb=use_ts)
        for version, note, step in _STEPS:
            if found < version:
                step(conn)
                conn.execute("INSERT INTO schema_version (version, note) VALUES (%s, %s)",
                             (version, note))
                log.info("schema migrated", version=version)
        if found <= SCHEMA_VERSION:
            ensure_partitions(conn)
        if found > SCHEMA_VERSION:
            log.warning("database schema is newer than this ingest", found=found,
                        supported=SCHEMA_VERSION)
    return found
