"""`isoedge ingest verify-stored`: the stored record checked against its signed evidence.

Each stored envelope's JWS (table `evidence`) is verified again against the key registry, and
what it signed is compared with what the tables hold: the envelope row (payload hash, chain
link, kid, stream, item count) and every item's row in `readings` or `events`. A row changed
in the database after it was stored, an item deleted, an envelope whose evidence is missing or
no longer verifies: each is a finding naming the agent and seq.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import psycopg

from agent.core.items import COLUMNS
from central.envelope import KeyRegistry, Rejected, verify
from central.evidence import unpack
from central.store import QUALITY, typed_value

_KNOWN = COLUMNS
PAGE = 500  # envelopes per query


@dataclass
class Selection:
    """Which part of the record to check."""

    site: str | None = None
    agent: str | None = None
    from_seq: int | None = None
    to_seq: int | None = None


@dataclass
class Findings:
    """What verify-stored found."""

    envelopes: int = 0
    readings: int = 0
    events: int = 0
    problems: list[str] = field(default_factory=list)


def _reading_row(it: dict[str, Any]) -> tuple[Any, ...]:
    """The row the ingest stores for a reading item, as the view `readings` shows it."""
    number, flag, text, other = typed_value(it.get("value"))
    extra = {k: v for k, v in it.items() if k not in _KNOWN} | (other or {})
    if it["quality"] not in QUALITY:
        extra["quality"] = it["quality"]
    unit = it.get("unit")
    return (it["id"], it["device"], it["channel"], datetime.fromisoformat(it["t"]),
            None if number is None else float(number), flag, text,
            None if unit in (None, "") else str(unit), it["quality"], it.get("nuclide"),
            extra or None)


READING_SQL = (
    "SELECT pos, id, device, channel, t, value, value_bool, value_text, unit, quality, nuclide,"
    " extra FROM readings WHERE site = %s AND agent = %s AND seq = %s AND t >= %s AND t <= %s"
)
READING_COLUMNS = ("id", "device", "channel", "t", "value", "value_bool", "value_text", "unit",
                   "quality", "nuclide", "extra")


def verify_stored(conn: psycopg.Connection[Any], registry: KeyRegistry,
                  selection: Selection) -> Findings:
    """Check the selected envelopes; blocking (large ranges take a while)."""
    found = Findings()
    where, params = ["true"], []
    for column, op, value in (("site", "=", selection.site), ("agent", "=", selection.agent),
                              ("seq", ">=", selection.from_seq), ("seq", "<=", selection.to_seq)):
        if value is not None:
            where.append(f"e.{column} {op} %s")
            params.append(value)
    # `where` holds fixed column names and placeholders only; the values go as parameters.
    sql = (
        "SELECT e.site, e.agent, e.seq, e.stream, e.kid, e.created, e.payload_sha256,"  # noqa: S608
        " e.prev, e.n_items, e.topic, v.jws_zlib FROM envelopes e"
        " LEFT JOIN evidence v ON v.site = e.site AND v.agent = e.agent AND v.seq = e.seq"
        f" WHERE {' AND '.join(where)} AND (e.site, e.agent, e.seq) > (%s, %s, %s)"
        " ORDER BY e.site, e.agent, e.seq LIMIT %s"
    )
    after: tuple[str, str, int] = ("", "", 0)
    while True:
        rows = conn.execute(sql, [*params, *after, PAGE]).fetchall()
        if not rows:
            return found
        for row in rows:
            _check_envelope(conn, registry, row, found)
        after = (rows[-1][0], rows[-1][1], int(rows[-1][2]))


def _check_envelope(conn: psycopg.Connection[Any], registry: KeyRegistry,
                    row: tuple[Any, ...], found: Findings) -> None:
    site, agent, seq, stream, kid, created, sha, prev, n_items, topic, blob = row
    name = f"{site}/{agent} seq {seq}"
    found.envelopes += 1
    if blob is None:
        found.problems.append(f"{name}: no signed evidence stored")
        return
    try:
        env = verify(unpack(bytes(blob)), topic, site=site, agent=agent, stream=stream,
                     registry=registry)
    except (Rejected, ValueError) as exc:
        found.problems.append(f"{name}: evidence does not verify ({exc})")
        return
    try:
        signed_created: Any = datetime.fromisoformat(env.created)
    except ValueError:
        signed_created = env.created
    signed = (env.seq, env.stream, env.kid, signed_created, env.payload_sha256, env.prev,
              len(env.items))
    stored = (int(seq), stream, kid, created, sha, prev, int(n_items))
    if signed != stored:
        found.problems.append(f"{name}: envelope row differs from its evidence "
                              f"(stored {stored}, signed {signed})")
    if env.stream == "readings":
        _check_readings(conn, env.items, (site, agent, int(seq)), name, found)
    else:
        _check_events(conn, env.items, (site, agent, int(seq), env.stream), name, found)


def _check_readings(conn: psycopg.Connection[Any], items: list[dict[str, Any]],
                    key: tuple[str, str, int], name: str, found: Findings) -> None:
    site, agent, seq = key
    expected: list[tuple[Any, ...] | None] = []
    for it in items:
        try:
            expected.append(_reading_row(it))
        except ValueError:
            expected.append(None)
            found.problems.append(f"{name}: reading {it['id']}: signed time {it['t']!r} unreadable")
    times = [row[3] for row in expected if row is not None]
    stored: dict[int, tuple[Any, ...]] = {}
    if times:
        stored = {int(r[0]): tuple(r[1:]) for r in conn.execute(
            READING_SQL, (site, agent, seq, min(times), max(times)))}
    for pos, (it, want) in enumerate(zip(items, expected, strict=True)):
        found.readings += 1
        row = stored.pop(pos, None)
        if want is None:
            continue
        if row is None:
            found.problems.append(f"{name}: reading {it['id']} missing")
        elif row != want:
            changed = [c for c, a, b in zip(READING_COLUMNS, row, want, strict=True) if a != b]
            found.problems.append(f"{name}: reading {it['id']} differs from the signed item"
                                  f" ({', '.join(changed)})")
    for pos in sorted(stored):
        found.problems.append(f"{name}: a stored reading at position {pos} was never signed")


def _check_events(conn: psycopg.Connection[Any], items: list[dict[str, Any]],
                  key: tuple[str, str, int, str], name: str, found: Findings) -> None:
    site, agent, seq, stream = key
    ids = [str(it.get("id") or f"{site}/{agent}/{seq}/{i}") for i, it in enumerate(items)]
    stored = {
        r[0]: r[1:]
        for r in conn.execute("SELECT id, site, agent, stream, body, seq FROM events"
                              " WHERE id = ANY(%s)", (ids,))
    }
    for event_id, it in zip(ids, items, strict=True):
        found.events += 1
        row = stored.get(event_id)
        if row is None:
            found.problems.append(f"{name}: event {event_id} missing")
        elif row != (site, agent, stream, orjson.loads(orjson.dumps(it)), seq):
            found.problems.append(f"{name}: event {event_id} differs from the signed item")
