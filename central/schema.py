"""The ingest's PostgreSQL schema, created and migrated by the ingest itself (versioned).

Each migration runs once, in order, inside one transaction that also records its version in
`schema_version`; an advisory lock makes concurrent ingest processes wait for each other, so
two processes starting together never both migrate.
"""

from __future__ import annotations

import psycopg
import structlog

from central.completeness import rebuild

log = structlog.get_logger("isoedge.central.schema")

_LOCK_KEY = 0x15_0ED6E  # pg_advisory_xact_lock key of the migration

# Version 1: the tables of CONTRACT.md §6 plus what completeness and repair need.
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

# Version 2: every value the contract allows (CONTRACT.md §7: a number, a boolean or a short
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

SCHEMA_VERSION = 5


def timescale_available(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    """Whether the server offers the timescaledb extension."""
    row = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    return row is not None


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
        if found < 2:  # noqa: PLR2004 - the version number
            conn.execute(_V2)
            conn.execute("INSERT INTO schema_version (version, note) VALUES (2, %s)",
                         ("readings: boolean and text values",))
            log.info("schema migrated", version=2)
        if found < 3:  # noqa: PLR2004 - the version number
            conn.execute(_V3)
            rebuild(conn)  # an existing record: its completeness computed once, here
            conn.execute("INSERT INTO schema_version (version, note) VALUES (3, %s)",
                         ("completeness maintained per agent",))
            log.info("schema migrated", version=3)
        if found < 4:  # noqa: PLR2004 - the version number
            conn.execute(_V4)
            conn.execute("INSERT INTO schema_version (version, note) VALUES (4, %s)",
                         ("signed evidence kept (compressed JWS)",))
            log.info("schema migrated", version=4)
        if found < 5:  # noqa: PLR2004 - the version number
            conn.execute(_V5)
            conn.execute("INSERT INTO schema_version (version, note) VALUES (5, %s)",
                         ("series of the record",))
            log.info("schema migrated", version=5)
        if found > SCHEMA_VERSION:
            log.warning("database schema is newer than this ingest", found=found,
                        supported=SCHEMA_VERSION)
    return found
