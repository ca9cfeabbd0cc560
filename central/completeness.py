"""Completeness of each agent's record, computed in SQL from the stored envelopes.

Envelopes of one agent arrive in any order (a share group splits them between processes, a
replay fills a hole late), so completeness is a property of the stored set, not of arrival:
the seq ranges stored, the holes between them (and before the first one: seq starts at 1),
and the hash chain wherever two neighbours are both present (`prev` of seq n equals
`payload_sha256` of seq n-1; seq 1 has `prev` "").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

GAPS_SQL = """
SELECT site, agent, from_seq, to_seq FROM (
    SELECT site, agent,
           lag(seq, 1, 0::bigint) OVER (PARTITION BY site, agent ORDER BY seq) + 1 AS from_seq,
           seq - 1 AS to_seq
    FROM envelopes
) holes
WHERE to_seq >= from_seq
ORDER BY site, agent, from_seq
"""

CHAIN_SQL = """
SELECT e.site, e.agent, e.seq
FROM envelopes e
JOIN envelopes p ON p.site = e.site AND p.agent = e.agent AND p.seq = e.seq - 1
WHERE e.prev <> p.payload_sha256
UNION ALL
SELECT site, agent, seq FROM envelopes WHERE seq = 1 AND prev <> ''
ORDER BY 1, 2, 3
"""

SUMMARY_SQL = """
SELECT site, agent, min(seq), max(seq), count(*), max(received)
FROM envelopes GROUP BY site, agent ORDER BY site, agent
"""

READINGS_SQL = "SELECT site, agent, count(*) FROM readings GROUP BY site, agent"


@dataclass
class AgentCompleteness:
    """One agent's line of `isoedge ingest report`."""

    site: str
    agent: str
    first_seq: int | None = None
    last_seq: int | None = None
    envelopes: int = 0
    gaps: list[tuple[int, int]] | None = None
    broken_at: list[int] | None = None
    permanent_gaps: list[tuple[int, int]] | None = None
    readings: int = 0
    last_seen: datetime | None = None

    @property
    def chain(self) -> str:
        """`ok`, `broken`, or `no data` (registered, nothing stored: nothing to vouch for)."""
        if self.broken_at:
            return "broken"
        return "no data" if not self.envelopes else "ok"

    def as_json(self) -> dict[str, Any]:
        """The object of CONTRACT.md §6 (plus `permanent_gaps`, the gaps no archive can fill)."""
        return {
            "site": self.site,
            "agent": self.agent,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "envelopes": self.envelopes,
            "gaps": [list(g) for g in self.gaps or []],
            "chain": self.chain,
            "readings": self.readings,
            "last_seen": self.last_seen.isoformat().replace("+00:00", "Z")
            if self.last_seen
            else None,
            "permanent_gaps": [list(g) for g in self.permanent_gaps or []],
        }


def gaps(conn: psycopg.Connection[Any]) -> dict[tuple[str, str], list[tuple[int, int]]]:
    """Holes per agent (including one before the first stored seq)."""
    out: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for site, agent, lo, hi in conn.execute(GAPS_SQL):
        out.setdefault((site, agent), []).append((int(lo), int(hi)))
    return out


def chain_breaks(conn: psycopg.Connection[Any]) -> dict[tuple[str, str], list[int]]:
    """Seqs whose `prev` does not match the stored predecessor."""
    out: dict[tuple[str, str], list[int]] = {}
    for site, agent, seq in conn.execute(CHAIN_SQL):
        out.setdefault((site, agent), []).append(int(seq))
    return out


def report(
    conn: psycopg.Connection[Any], registered: list[tuple[str, str]] | None = None
) -> list[AgentCompleteness]:
    """Every agent stored or registered, with its ranges, gaps, chain and counts."""
    agents: dict[tuple[str, str], AgentCompleteness] = {
        key: AgentCompleteness(*key) for key in registered or []
    }
    for site, agent, lo, hi, count, last in conn.execute(SUMMARY_SQL):
        entry = agents.setdefault((site, agent), AgentCompleteness(site, agent))
        entry.first_seq, entry.last_seq, entry.envelopes, entry.last_seen = (
            int(lo), int(hi), int(count), last
        )
    for key, holes in gaps(conn).items():
        agents[key].gaps = holes
    for key, seqs in chain_breaks(conn).items():
        agents[key].broken_at = seqs
    for site, agent, count in conn.execute(READINGS_SQL):
        agents.setdefault((site, agent), AgentCompleteness(site, agent)).readings = int(count)
    for site, agent, lo, hi in conn.execute(
        "SELECT site, agent, from_seq, to_seq FROM gaps WHERE state = 'permanent'"
        " ORDER BY from_seq"
    ):
        found = agents.get((site, agent))
        if found is None:
            continue
        entry = found
        if (int(lo), int(hi)) in (entry.gaps or []):
            entry.permanent_gaps = [*(entry.permanent_gaps or []), (int(lo), int(hi))]
    return [agents[k] for k in sorted(agents)]
