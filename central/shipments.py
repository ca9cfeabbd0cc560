"""Shipments reconciled across sites: the sender's signed shipment against the receiver's receipt.

Records on the `qc` stream (shapes: docs/contract.md §4): a `shipment` (signed at the sending
site) names `shipment_id`, `destination_site`, the nuclide and the activity at a reference
time; a `receipt` (signed at the receiving site) names the same `shipment_id`, its
`origin_site`, and the activity measured at `measured_at`. The writer keeps one row per
shipment in `shipments` (keyed by the sending site and the shipment id), filled from whichever
record arrives first, in the transaction that stores the envelope (`note_records`). The check
cycle (`reconcile`) then decides, for rows not settled yet:

- the expected activity is recomputed here from the shipment, decay-corrected with the
  built-in half-life to `measured_at` (a receipt's own `expected_mbq` is never trusted);
- `within` when |measured - expected| / expected ≤ `[shipments] tolerance_pct`, else
  `out_of_tolerance`;
- `misrouted` when the receipt comes from another site than the shipment's destination;
- `unmatched` when a shipment has no receipt `grace_s` after it was shipped, `no_shipment`
  when a receipt has no shipment that long after it was received;
- `invalid` when the nuclide is not one the ingest knows a half-life for.

Every state but `within` (and `awaiting`, inside the grace) is a central alert (kind
`shipment`), and every shipment is a line of the fleet page. A correcting record (`corrects`)
replaces the one it corrects (the newer record wins) and the shipment is decided again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

import orjson
import psycopg
import structlog
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from agent.physics.nuclides import NUCLIDES, decay_value, normalize_nuclide

log = structlog.get_logger("isoedge.central.shipments")

SETTLED = ("within", "out_of_tolerance", "misrouted", "invalid")
ALERTING = ("out_of_tolerance", "misrouted", "invalid", "unmatched", "no_shipment")

Text = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Site = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Mbq = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=False)

    id: Text
    t: AwareDatetime
    site: Site
    shipment_id: Text
    corrects: Text | None = None


class ShipmentRecord(_Record):
    """`kind: shipment`, signed at the sending site."""

    batch_id: Text | None = None
    product: Text | None = None
    nuclide: Text
    activity_mbq: Mbq
    reference_time: AwareDatetime
    destination_site: Site


class ReceiptRecord(_Record):
    """`kind: receipt`, signed at the receiving site."""

    origin_site: Site
    nuclide: Text | None = None
    measured_mbq: Mbq
    measured_at: AwareDatetime
    expected_mbq: float | None = None  # the receiving agent's figure: shown, never trusted


SHIPMENT_UPSERT = """
INSERT INTO shipments (site, shipment_id, agent, record_id, destination_site, batch_id,
                       product, nuclide, activity_mbq, reference_time, shipped, state, checked)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'awaiting', NULL)
ON CONFLICT (site, shipment_id) DO UPDATE SET
    agent = EXCLUDED.agent, record_id = EXCLUDED.record_id,
    destination_site = EXCLUDED.destination_site, batch_id = EXCLUDED.batch_id,
    product = EXCLUDED.product, nuclide = EXCLUDED.nuclide,
    activity_mbq = EXCLUDED.activity_mbq, reference_time = EXCLUDED.reference_time,
    shipped = EXCLUDED.shipped, checked = NULL, updated = now()
WHERE shipments.shipped IS NULL OR shipments.shipped <= EXCLUDED.shipped
"""

RECEIPT_UPSERT = """
INSERT INTO shipments (site, shipment_id, receipt_site, receipt_agent, receipt_id,
                       measured_mbq, measured_at, received, reported_expected_mbq, state,
                       checked)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'awaiting', NULL)
ON CONFLICT (site, shipment_id) DO UPDATE SET
    receipt_site = EXCLUDED.receipt_site, receipt_agent = EXCLUDED.receipt_agent,
    receipt_id = EXCLUDED.receipt_id, measured_mbq = EXCLUDED.measured_mbq,
    measured_at = EXCLUDED.measured_at, received = EXCLUDED.received,
    reported_expected_mbq = EXCLUDED.reported_expected_mbq, checked = NULL, updated = now()
WHERE shipments.received IS NULL OR shipments.received <= EXCLUDED.received
"""


def note_records(cur: psycopg.Cursor[Any], site: str, agent: str,
                 items: list[dict[str, Any]]) -> int:
    """Shipment and receipt records among one agent's new `qc` items into `shipments`.

    Runs in the writer's transaction. A record of either kind that does not parse is left to
    the events table (it is stored and signed there) and logged; it never fails the batch.
    """
    noted = 0
    for item in items:
        kind = item.get("kind")
        if kind not in {"shipment", "receipt"}:
            continue
        try:
            if kind == "shipment":
                s = ShipmentRecord.model_validate(item)
                _same_site(s, site)
                cur.execute(SHIPMENT_UPSERT, (
                    s.site, s.shipment_id, agent, s.id, s.destination_site, s.batch_id,
                    s.product, s.nuclide, s.activity_mbq, s.reference_time, s.t))
            else:
                r = ReceiptRecord.model_validate(item)
                _same_site(r, site)
                cur.execute(RECEIPT_UPSERT, (
                    r.origin_site, r.shipment_id, r.site, agent, r.id, r.measured_mbq,
                    r.measured_at, r.t, r.expected_mbq))
        except (ValidationError, ValueError) as exc:
            log.warning("shipment record not usable", site=site, agent=agent, kind=kind,
                        record=str(item.get("id"))[:64], error=str(exc)[:200])
            continue
        noted += 1
    return noted


def _same_site(record: _Record, site: str) -> None:
    if record.site != site:
        raise ValueError("the record's site is not the envelope's")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the check decided for one shipment."""

    state: str
    expected_mbq: float | None = None
    difference_pct: float | None = None


def decide(row: dict[str, Any], *, tolerance_pct: float, grace: timedelta,
           now: datetime) -> Verdict:
    """The state of one shipment row (see the module's docstring)."""
    shipped, received = row["shipped"], row["received"]
    if shipped is None:
        due = received is not None and received + grace <= now
        return Verdict("no_shipment" if due else "awaiting")
    if received is None:
        return Verdict("unmatched" if shipped + grace <= now else "awaiting")
    if row["receipt_site"] != row["destination_site"]:
        return Verdict("misrouted")
    nuclide = normalize_nuclide(row["nuclide"])
    if nuclide is None or nuclide not in NUCLIDES:
        return Verdict("invalid")
    elapsed = (row["measured_at"] - row["reference_time"]).total_seconds()
    expected = decay_value(float(row["activity_mbq"]), elapsed, NUCLIDES[nuclide].half_life_s)
    difference = 100.0 * (float(row["measured_mbq"]) - expected) / expected
    state = "within" if abs(difference) <= tolerance_pct else "out_of_tolerance"
    return Verdict(state, round(expected, 6), round(difference, 4))


COLUMNS = ("site", "shipment_id", "agent", "destination_site", "batch_id", "product",
           "nuclide", "activity_mbq", "reference_time", "shipped", "receipt_site",
           "receipt_agent", "measured_mbq", "measured_at", "received",
           "reported_expected_mbq", "expected_mbq", "difference_pct", "state", "updated")

_ALERT = """
INSERT INTO central_alerts (kind, site, agent, key, message, detail, severity)
VALUES ('shipment', %s, %s, %s, %s, %s, %s)
ON CONFLICT (kind, site, agent, key) WHERE cleared IS NULL
DO UPDATE SET updated = now(), message = EXCLUDED.message, detail = EXCLUDED.detail,
              severity = EXCLUDED.severity
WHERE central_alerts.detail IS DISTINCT FROM EXCLUDED.detail
"""
_CLEAR = """
UPDATE central_alerts SET cleared = now(), updated = now()
WHERE kind = 'shipment' AND cleared IS NULL AND site = %s AND key = %s
"""
_MESSAGES = {
    "out_of_tolerance": "shipment {id} from {site}: measured {measured:.4g} MBq at {dest},"
                        " expected {expected:.4g} MBq ({difference:+.2f} %, tolerance"
                        " {tolerance:g} %)",
    "misrouted": "shipment {id} from {site} for {dest} was received at {received_at}",
    "invalid": "shipment {id} from {site}: nuclide {nuclide} has no known half-life",
    "unmatched": "shipment {id} from {site} to {dest}: no receipt after {grace}",
    "no_shipment": "receipt of shipment {id} at {received_at}: no shipment record from {site}",
}


def reconcile(conn: psycopg.Connection[Any], *, tolerance_pct: float, grace_s: float,
              now: datetime | None = None) -> dict[str, int]:
    """Decide every shipment not settled yet; raise or clear its alert. Counts per state.

    One transaction (with the rows locked), so two ingest processes never decide one
    shipment twice at once.
    """
    grace = timedelta(seconds=grace_s)
    counts: dict[str, int] = {}
    with conn.transaction(), conn.cursor() as cur:
        when = now or cur.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        cur.execute(
            f"SELECT {', '.join(COLUMNS)} FROM shipments"  # noqa: S608 - fixed columns
            " WHERE checked IS NULL OR state IN ('awaiting', 'no_shipment')"
            " FOR UPDATE SKIP LOCKED")
        rows = [dict(zip(COLUMNS, r, strict=True)) for r in cur.fetchall()]
        for row in rows:
            verdict = decide(row, tolerance_pct=tolerance_pct, grace=grace, now=when)
            counts[verdict.state] = counts.get(verdict.state, 0) + 1
            cur.execute(
                "UPDATE shipments SET state = %s, expected_mbq = %s, difference_pct = %s,"
                " tolerance_pct = %s, checked = %s, updated = now()"
                " WHERE site = %s AND shipment_id = %s",
                (verdict.state, verdict.expected_mbq, verdict.difference_pct, tolerance_pct,
                 when, row["site"], row["shipment_id"]))
            if verdict.state in ALERTING:
                _raise(cur, row, verdict, tolerance_pct, grace)
            elif verdict.state == "within":
                cur.execute(_CLEAR, (row["site"], row["shipment_id"]))
    return counts


def _raise(cur: psycopg.Cursor[Any], row: dict[str, Any], verdict: Verdict,
           tolerance_pct: float, grace: timedelta) -> None:
    message = _MESSAGES[verdict.state].format(
        id=row["shipment_id"], site=row["site"], dest=row["destination_site"],
        measured=row["measured_mbq"] or 0.0, expected=verdict.expected_mbq or 0.0,
        difference=verdict.difference_pct or 0.0, tolerance=tolerance_pct,
        received_at=row["receipt_site"], nuclide=row["nuclide"], grace=grace)
    detail = {"state": verdict.state, "shipment_id": row["shipment_id"],
              "destination_site": row["destination_site"], "receipt_site": row["receipt_site"],
              "expected_mbq": verdict.expected_mbq, "measured_mbq": row["measured_mbq"],
              "difference_pct": verdict.difference_pct, "tolerance_pct": tolerance_pct}
    severity = "critical" if verdict.state in {"out_of_tolerance", "misrouted"} else "warning"
    agent = row["agent"] or row["receipt_agent"] or ""
    # One open alert per shipment: one raised under the receiving agent (no shipment record
    # yet) gives way to the sender's.
    cur.execute(_CLEAR + " AND agent <> %s", (row["site"], row["shipment_id"], agent))
    cur.execute(_ALERT, (row["site"], agent, row["shipment_id"], message,
                         orjson.dumps(detail).decode(), severity))


def listing(conn: psycopg.Connection[Any], limit: int = 200) -> list[dict[str, Any]]:
    """The fleet page's lines: the ones needing attention first, then the newest."""
    out = []
    for values in conn.execute(
        f"SELECT {', '.join(COLUMNS)} FROM shipments"  # noqa: S608 - fixed columns
        " ORDER BY (state = ANY(%s)) DESC, coalesce(shipped, received) DESC LIMIT %s",
        (list(ALERTING), limit),
    ):
        row = dict(zip(COLUMNS, values, strict=True))
        out.append({k: (v.isoformat().replace("+00:00", "Z") if isinstance(v, datetime) else v)
                    for k, v in row.items()})
    return out
