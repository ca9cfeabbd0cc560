"""The record is ready for distribution by site (issue 24, docs/fleet.md): every table has a
`site` column and every primary key, unique constraint and unique index includes it, in a new
database and in one migrated from the first schema with data in it; only the reference tables
named in central/schema.py have no site."""

from __future__ import annotations

import psycopg
from test_schema_migration import _first_schema

from central import schema
from central.schema import CITUS_REFERENCE_TABLES, migrate

# Every table of the record and the columns of each of its unique keys (partitions included:
# Citus distributes a partitioned table with its partitions).
UNIQUE_KEYS_SQL = """
SELECT c.relname, i.indexrelid::regclass::text,
       array_agg(a.attname ORDER BY a.attnum)
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)
WHERE n.nspname = 'public' AND (i.indisunique OR i.indisprimary)
GROUP BY 1, 2 ORDER BY 1, 2
"""
TABLES_SQL = """
SELECT c.relname, bool_or(a.attname = 'site')
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
GROUP BY 1 ORDER BY 1
"""


def _violations(conn: psycopg.Connection) -> list[str]:
    problems = []
    for table, has_site in conn.execute(TABLES_SQL):
        if table not in CITUS_REFERENCE_TABLES and not has_site:
            problems.append(f"{table}: no site column")
    for table, index, columns in conn.execute(UNIQUE_KEYS_SQL):
        if table not in CITUS_REFERENCE_TABLES and "site" not in columns:
            problems.append(f"{table}: unique key {index} {columns} does not include site")
    return problems


def test_a_new_database_keys_every_table_by_site(postgres):
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        migrate(conn)
        tables = {r[0] for r in conn.execute(TABLES_SQL)}
        # The check sees the whole record, partitions and completeness tables included.
        assert {"envelopes", "events", "reading_rows", "reading_rows_default", "series",
                "evidence", "agent_record", "seq_ranges", "shipments",
                "central_alerts"} <= tables
        assert _violations(conn) == []
        # And it can fail: a key without site is found.
        conn.execute("CREATE TABLE probe (site text, id bigint PRIMARY KEY)")
        assert _violations(conn) == ["probe: unique key probe_pkey ['id'] does not include site"]


def test_a_migrated_database_keys_every_table_by_site_and_keeps_its_readings(postgres):
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        _first_schema(conn)
        assert migrate(conn) == 1
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (
            schema.SCHEMA_VERSION,)
        assert _violations(conn) == []
        rows = conn.execute("SELECT r.site, s.site FROM reading_rows r"
                            " JOIN series s ON s.id = r.series").fetchall()
        assert rows and all(a == b == "lab1" for a, b in rows)
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (4,)
