"""Completeness of each agent's record, maintained as envelopes are stored.

Envelopes of one agent arrive in any order (a share group splits them between processes, a
replay fills a hole late), so completeness is a property of the stored set, not of arrival:
the seq ranges stored, the holes between them (and before the first one: seq starts at 1),
and the hash chain wherever two neighbours are both present (`prev` of seq n equals
`payload_sha256` of seq n-1; seq 1 has `prev` "").

The writer keeps three small tables up to date in the same transaction as the envelopes
(`central.store`): `agent_record` (counts, first/last seq, last seen; its row is also the
agent's lock), `seq_ranges` (the stored ranges, merged as they grow) and `chain_breaks`. The
report, the fleet page and the repair cycle read those: a few rows per agent, whatever the
size of the record. `rebuild` recomputes them from `envelopes` and `readings` (the SQL below
scans the whole record) and says where they disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

# From the record itself (full scans: rebuild and its check only).
RANGES_SQL = """
SELECT site, agent, min(seq), max(seq) FROM (
    SELECT site, agent, seq,
           seq - row_number() OVER (PARTITION BY site, agent ORDER BY seq) AS run
    FROM envelopes
) runs
GROUP BY site, agent, run
ORDER BY site, agent, 3
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
SELECT e.site, e.agent, e.n, coalesce(r.n, 0), e.first_seq, e.last_seq, e.last_seen
FROM (SELECT site, agent, count(*) AS n, min(seq) AS first_seq, max(seq) AS last_seq,
             max(received) AS last_seen
      FROM envelopes GROUP BY site, agent) e
LEFT JOIN (SELECT site, agent, sum(n_items) AS n FROM envelopes WHERE stream = 'readings'
           GROUP BY site, agent) r
       ON r.site = e.site AND r.agent = e.agent
ORDER BY 1, 2
"""

Key = tuple[str, str]
Totals = tuple[int, int, int, int, datetime]  # envelopes, readings, first, last, last seen


def holes(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The gaps left by sorted, disjoint stored ranges (seq starts at 1)."""
    out: list[tuple[int, int]] = []
    expected = 1
    for lo, hi in ranges:
        if lo > expected:
            out.append((expected, lo - 1))
        expected = max(expected, hi + 1)
    return out


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, disjoint ranges covering `ranges` (touching ones joined: 1..3 + 4..6 = 1..6)."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def runs(seqs: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs of a list of seqs: [1, 2, 3, 7] -> [(1, 3), (7, 7)]."""
    return merge_ranges([(s, s) for s in seqs])


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
        """The object of docs/contract.md §6 (and `permanent_gaps`: gaps no archive can fill)."""
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


def stored_ranges(conn: psycopg.Connection[Any]) -> dict[Key, list[tuple[int, int]]]:
    """The maintained seq ranges per agent."""
    out: dict[Key, list[tuple[int, int]]] = {}
    for site, agent, lo, hi in conn.execute(
        "SELECT site, agent, lo, hi FROM seq_ranges ORDER BY site, agent, lo"
    ):
        out.setdefault((site, agent), []).append((int(lo), int(hi)))
    return out


def gaps(conn: psycopg.Connection[Any]) -> dict[Key, list[tuple[int, int]]]:
    """Holes per agent (including one before the first stored seq)."""
    out = {}
    for key, ranges in stored_ranges(conn).items():
        if found := holes(ranges):
            out[key] = found
    return out


def chain_breaks(conn: psycopg.Connection[Any]) -> dict[Key, list[int]]:
    """Seqs whose `prev` does not match the stored predecessor."""
    out: dict[Key, list[int]] = {}
    for site, agent, seq in conn.execute(
        "SELECT site, agent, seq FROM chain_breaks ORDER BY site, agent, seq"
    ):
        out.setdefault((site, agent), []).append(int(seq))
    return out


# One statement, so one snapshot: read in several statements, a writer committing between them
# (a replay filling 16 holes) gave counts from before and ranges from after ("no gaps", 54
# envelopes for seq 1..70).
REPORT_SQL = """
SELECT a.site, a.agent, a.envelopes, a.readings, a.first_seq, a.last_seq, a.last_seen,
       (SELECT array_agg(ARRAY[s.lo, s.hi] ORDER BY s.lo) FROM seq_ranges s
         WHERE s.site = a.site AND s.agent = a.agent),
       (SELECT array_agg(c.seq ORDER BY c.seq) FROM chain_breaks c
         WHERE c.site = a.site AND c.agent = a.agent),
       (SELECT array_agg(ARRAY[g.from_seq, g.to_seq] ORDER BY g.from_seq) FROM gaps g
         WHERE g.site = a.site AND g.agent = a.agent AND g.state = 'permanent')
FROM agent_record a
WHERE a.envelopes > 0
"""


def report(
    conn: psycopg.Connection[Any], registered: list[tuple[str, str]] | None = None
) -> list[AgentCompleteness]:
    """Every agent stored or registered, with its ranges, gaps, chain and counts."""
    agents: dict[Key, AgentCompleteness] = {
        key: AgentCompleteness(*key) for key in registered or []
    }
    for site, agent, envelopes, readings, lo, hi, last, ranges, breaks, permanent in (
        conn.execute(REPORT_SQL)
    ):
        entry = agents.setdefault((site, agent), AgentCompleteness(site, agent))
        entry.first_seq, entry.last_seq, entry.envelopes, entry.readings, entry.last_seen = (
            int(lo), int(hi), int(envelopes), int(readings), last
        )
        entry.gaps = holes([(int(r_lo), int(r_hi)) for r_lo, r_hi in ranges or []]) or None
        entry.broken_at = [int(seq) for seq in breaks or []] or None
        entry.permanent_gaps = [
            (int(p_lo), int(p_hi)) for p_lo, p_hi in permanent or []
            if (int(p_lo), int(p_hi)) in (entry.gaps or [])
        ] or None
    return [agents[k] for k in sorted(agents)]


@dataclass
class Recomputed:
    """Completeness computed from the record itself."""

    totals: dict[Key, Totals]
    ranges: dict[Key, list[tuple[int, int]]]
    breaks: dict[Key, list[int]]


def recompute(conn: psycopg.Connection[Any]) -> Recomputed:
    """Scan `envelopes` and `readings` (slow on a large record: rebuild only)."""
    totals: dict[Key, Totals] = {
        (site, agent): (int(n), int(r), int(lo), int(hi), last)
        for site, agent, n, r, lo, hi, last in conn.execute(SUMMARY_SQL)
    }
    ranges: dict[Key, list[tuple[int, int]]] = {}
    for site, agent, lo, hi in conn.execute(RANGES_SQL):
        ranges.setdefault((site, agent), []).append((int(lo), int(hi)))
    breaks: dict[Key, list[int]] = {}
    for site, agent, seq in conn.execute(CHAIN_SQL):
        breaks.setdefault((site, agent), []).append(int(seq))
    return Recomputed(totals, ranges, breaks)


def maintained(conn: psycopg.Connection[Any]) -> Recomputed:
    """What the writers maintained (agents without envelopes left out)."""
    totals: dict[Key, Totals] = {
        (site, agent): (int(n), int(r), int(lo), int(hi), last)
        for site, agent, n, r, lo, hi, last in conn.execute(
            "SELECT site, agent, envelopes, readings, first_seq, last_seq, last_seen"
            " FROM agent_record WHERE envelopes > 0 OR readings > 0 ORDER BY 1, 2"
        )
    }
    return Recomputed(totals, stored_ranges(conn), chain_breaks(conn))


def differences(found: Recomputed, kept: Recomputed) -> list[str]:
    """Where the maintained completeness disagrees with the record, one line each."""
    out: list[str] = []
    for key in sorted(set(found.totals) | set(kept.totals)):
        name = "/".join(key)
        if found.totals.get(key) != kept.totals.get(key):
            out.append(f"{name}: counts {kept.totals.get(key)} kept, "
                       f"{found.totals.get(key)} in the record")
    for label, a, b in (("ranges", found.ranges, kept.ranges),
                        ("chain breaks", found.breaks, kept.breaks)):
        out.extend(
            f"{'/'.join(key)}: {label} {b.get(key, [])} kept, {a.get(key, [])} in the record"
            for key in sorted(set(a) | set(b))
            if a.get(key, []) != b.get(key, [])
        )
    return out


def rebuild(conn: psycopg.Connection[Any], *, write: bool = True) -> list[str]:
    """Recompute completeness from the record; with `write`, replace the maintained tables.

    Writers are held off meanwhile (they lock `agent_record` rows), so the comparison is of
    one state. Returns the differences found (empty: the maintained tables agreed).
    """
    with conn.transaction():
        conn.execute("LOCK TABLE agent_record IN EXCLUSIVE MODE")
        found = recompute(conn)
        diff = differences(found, maintained(conn))
        if write and diff:
            conn.execute("DELETE FROM seq_ranges")
            conn.execute("DELETE FROM chain_breaks")
            conn.execute("DELETE FROM agent_record")
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO agent_record (site, agent, envelopes, readings, first_seq,"
                    " last_seq, last_seen) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    [(*key, *t) for key, t in found.totals.items()],
                )
                cur.executemany(
                    "INSERT INTO seq_ranges (site, agent, lo, hi) VALUES (%s, %s, %s, %s)",
                    [(*key, lo, hi) for key, rs in found.ranges.items() for lo, hi in rs],
                )
                cur.executemany(
                    "INSERT INTO chain_breaks (site, agent, seq) VALUES (%s, %s, %s)",
                    [(*key, seq) for key, seqs in found.breaks.items() for seq in seqs],
                )
    return diff
