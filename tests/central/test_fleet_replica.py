"""`[web] database_url`: the fleet page's queries go to the read replica named there, the
ingest's writes to `database.url`. A second database on the same server stands in for the
replica (its content differs, so the page shows where it read)."""

from __future__ import annotations

import psycopg

from central.config import parse_config
from central.envelope import KeyRegistry
from central.fleet import FleetData
from central.schema import migrate


def _with_agent(url: str, agent: str, envelopes: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        conn.execute("INSERT INTO agent_record (site, agent, envelopes, readings, first_seq,"
                     " last_seq, last_seen) VALUES ('lab1', %s, %s, 0, 1, %s, now())",
                     (agent, envelopes, envelopes))
        conn.execute("INSERT INTO seq_ranges (site, agent, lo, hi) VALUES ('lab1', %s, 1, %s)",
                     (agent, envelopes))


def test_the_fleet_page_reads_from_the_replica_when_one_is_configured(postgres):
    replica = postgres.new_database("replica")
    _with_agent(postgres.url, "on-primary", 5)
    _with_agent(replica, "on-replica", 7)
    base = {"database": {"url": postgres.url}, "agents": []}
    primary_page = FleetData(parse_config({**base, "web": {"enabled": True}}, "t"),
                             KeyRegistry([]))
    replica_page = FleetData(parse_config(
        {**base, "web": {"enabled": True, "database_url": replica}}, "t"), KeyRegistry([]))
    assert [(a["agent"], a["last_seq"]) for a in primary_page.snapshot()["agents"]] == [
        ("on-primary", 5)]
    assert [(a["agent"], a["last_seq"]) for a in replica_page.snapshot()["agents"]] == [
        ("on-replica", 7)]
