"""A database of the first schema (wide readings with a text id per row) migrated in place to
the narrow, partitioned record: the same readings under the same ids, completeness computed
once, partitions created ahead; old partitions archived without losing a row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from central import schema
from central.completeness import rebuild, report
from central.schema import archive_partitions, migrate

ROWS = [  # id, seq, device, channel, t, value, unit, quality
    ("a-1", 1, "dc-1", "activity", "2026-12-01T10:00:00Z", 370.5, "MBq", "good"),
    ("a-2", 1, "dc-1", "activity", "2026-12-01T10:00:01Z", 371.0, "MBq", "good"),
    ("b-1", 2, "hc-1", "pressure", "2026-12-01T10:00:02Z", -45.0, "Pa", "uncertain"),
    ("c-1", 4, "hc-1", "pressure", "2026-12-01T10:00:03Z", None, "Pa", "bad"),
]


def _first_schema(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TABLE schema_version (version integer PRIMARY KEY,"
                 " applied timestamptz NOT NULL DEFAULT now(), note text NOT NULL)")
    conn.execute(schema._V1)
    conn.execute(schema._READINGS_PLAIN)
    conn.execute("INSERT INTO schema_version (version, note) VALUES (1, 'v1')")
    prev = ""
    for seq in (1, 2, 4):
        conn.execute(
            "INSERT INTO envelopes (site, agent, seq, stream, kid, created, payload_sha256, prev,"
            " n_items, topic) VALUES ('lab1', 'edge1', %s, 'readings', 'k', now(), %s, %s, %s,"
            " 't')", (seq, f"h{seq}", prev, sum(1 for r in ROWS if r[1] == seq)))
        prev = f"h{seq}"
    for rid, seq, device, channel, t, value, unit, quality in ROWS:
        conn.execute(
            "INSERT INTO readings (id, site, agent, device, channel, t, value, unit, quality,"
            " raw, seq) VALUES (%s, 'lab1', 'edge1', %s, %s, %s, %s, %s, %s, '{}', %s)",
            (rid, device, channel, t, value, unit, quality, seq))


def test_a_first_schema_database_is_migrated_to_the_narrow_record(postgres):
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        _first_schema(conn)
        assert migrate(conn) == 1
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (
            schema.SCHEMA_VERSION,)
        rows = conn.execute(
            "SELECT id, seq, device, channel, t, value, unit, quality FROM readings ORDER BY id"
        ).fetchall()
        assert [(r[0], r[1], r[2], r[3], r[5], r[6], r[7]) for r in rows] == [
            (r[0], r[1], r[2], r[3], r[5], r[6], r[7]) for r in ROWS]
        assert [r[4] for r in rows] == [
            datetime.fromisoformat(r[4]).astimezone(UTC) for r in ROWS]
        # the old table is kept beside the new record until someone drops it
        assert conn.execute("SELECT count(*) FROM readings_v5").fetchone() == (4,)
        (entry,) = report(conn)
        assert (entry.first_seq, entry.last_seq, entry.envelopes, entry.readings, entry.gaps,
                entry.chain) == (1, 4, 3, 4, [(3, 3)], "ok")  # seq 4 has no stored predecessor
        assert rebuild(conn, write=False) == []
        # partitions: yesterday to a week ahead exist; these old rows sit in the default one
        today = datetime.now(UTC).date()
        names = {r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'reading_rows'")}
        for offset in range(-1, schema.PARTITION_DAYS_AHEAD + 1):
            assert f"reading_rows_p{today + timedelta(days=offset):%Y%m%d}" in names
        assert conn.execute("SELECT count(*) FROM reading_rows_default").fetchone() == (4,)
        # a migrated database migrates no further
        assert migrate(conn) == schema.SCHEMA_VERSION


def test_old_partitions_are_archived_not_lost(postgres):
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        migrate(conn)
        yesterday = datetime.now(UTC) - timedelta(days=1)
        conn.execute("INSERT INTO series (site, agent, device, channel, unit)"
                     " VALUES ('lab1', 'edge1', 'dc-1', 'activity', 'MBq')")
        conn.execute("INSERT INTO reading_rows (site, series, pos, seq, t, value, quality)"
                     " SELECT 'lab1', 1, 0, 1, %s, 1.0, 0", (yesterday,))
        moved = archive_partitions(conn, datetime.now(UTC).date())
        assert moved == [f"archive.reading_rows_p{yesterday:%Y%m%d}"]
        assert conn.execute("SELECT count(*) FROM reading_rows").fetchone() == (0,)
        assert conn.execute(f"SELECT count(*) FROM {moved[0]}").fetchone() == (1,)  # noqa: S608
