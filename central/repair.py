"""Gap repair: ask an agent to re-publish what is missing from its archive; alert on the rest.

One ingest process of a group does a check cycle at a time (a transaction-level advisory lock),
so a share group asks for a gap once, not once per process. A gap is asked for once it is older
than `repair.grace_s` (envelopes of one agent can legitimately arrive out of order across the
group), asked again every `repair.retry_s`, and recorded as permanent after
`repair.max_attempts` requests, or at once when the agent's status says its archive no longer
reaches back that far. The agent re-publishes byte-identical envelopes on their original
topics, which the consumer stores like any other (ON CONFLICT DO NOTHING).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg
import structlog

from agent.delivery.replay import build_request
from agent.delivery.signing import Signer
from central.completeness import chain_breaks, gaps
from central.config import IngestConfig
from central.store import REFRESH_ALERT, connect

log = structlog.get_logger("isoedge.central.repair")

_LOCK_KEY = 0x15_0ED6F

CLEAR_ALERT = """
UPDATE central_alerts SET cleared = now(), updated = now()
WHERE cleared IS NULL AND kind = %s AND site = %s AND agent = %s AND NOT (key = ANY(%s))
"""


@dataclass(slots=True)
class _Gap:
    site: str
    agent: str
    lo: int
    hi: int
    first_seen: datetime
    last_request: datetime | None = None
    attempts: int = 0
    state: str = "open"


def _signed(status: dict[str, Any] | None) -> dict[str, Any]:
    """The members of the status that came from verified evidence (central/status.py)."""
    if not status:
        return {}
    evidence = status.get("evidence")
    return status if isinstance(evidence, dict) and evidence.get("verified") is True else {}


def _archive_start(status: dict[str, Any] | None) -> int | None:
    """First seq the agent still has in its archive, from its SIGNED status evidence."""
    status = _signed(status)
    if not status:
        return None
    archive = status.get("archive")
    if isinstance(archive, dict) and isinstance(archive.get("first_seq"), int):
        return int(archive["first_seq"])
    return None


class Repairer:
    """One check cycle at a time; `publish(topic, payload)` sends replay requests."""

    def __init__(self, config: IngestConfig, publish: Callable[[str, bytes], None], *,
                 signer: Signer | None = None) -> None:
        self.config = config
        self.publish = publish
        # Replay requests are signed with the ingest's own key (agents trust its public JWK);
        # without one nothing is asked, and gaps stay open (said once in the log).
        self.signer = signer
        self._said_unsigned = False
        self.prefix = config.broker.topic_prefix
        self.conn: psycopg.Connection[Any] | None = None
        self.requests_sent = 0

    def close(self) -> None:
        """Close the checker's connection."""
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
            self.conn = None

    def cycle(self) -> bool:
        """One check (blocking; run it in a thread). False when another process holds the lock."""
        if self.conn is None or self.conn.closed:
            self.conn = connect(self.config.database.url, application_name="isoedge-ingest-repair")
        try:
            with self.conn.transaction():
                row = self.conn.execute(
                    "SELECT pg_try_advisory_xact_lock(%s), now()", (_LOCK_KEY,)
                ).fetchone()
                if row is None or not row[0]:
                    return False
                self._check(self.conn, row[1])
        except psycopg.Error:
            self.close()
            raise
        return True

    def _check(self, conn: psycopg.Connection[Any], now: datetime) -> None:
        repair = self.config.repair
        current = gaps(conn)
        tracked: dict[tuple[str, str], list[_Gap]] = {}
        for r in conn.execute(
            "SELECT site, agent, from_seq, to_seq, first_seen, last_request, attempts, state"
            " FROM gaps"
        ):
            tracked.setdefault((r[0], r[1]), []).append(_Gap(*r))
        statuses = {
            (site, agent): body
            for site, agent, body in conn.execute("SELECT site, agent, body FROM agent_status")
        }
        conn.execute("DELETE FROM gaps")
        agents = set(current) | set(tracked)
        for key in sorted(agents):
            site, agent = key
            keep: list[_Gap] = []
            for lo, hi in current.get(key, []):
                old = next(
                    (g for g in tracked.get(key, []) if g.lo <= hi and lo <= g.hi), None
                )
                gap = _Gap(site, agent, lo, hi, old.first_seen if old else now,
                           old.last_request if old else None, old.attempts if old else 0,
                           old.state if old else "open")
                self._advance(gap, now, statuses.get(key), repair=repair)
                keep.append(gap)
            for gap in keep:
                conn.execute(
                    "INSERT INTO gaps (site, agent, from_seq, to_seq, first_seen, last_request,"
                    " attempts, state) VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                    (site, agent, gap.lo, gap.hi, gap.first_seen, gap.last_request,
                     gap.attempts, gap.state),
                )
            self._alerts(conn, site, agent, keep=keep, now=now, grace_s=repair.grace_s)
        breaks = chain_breaks(conn)
        for site, agent in sorted(set(breaks) | agents):
            seqs = breaks.get((site, agent))
            if seqs:
                conn.execute(REFRESH_ALERT, (
                    "chain_broken", site, agent, "",
                    "central.chain_broken" if len(seqs) == 1 else "central.chain_broken.more",
                    orjson.dumps({"seqs": seqs[:100], "seq": seqs[0],
                                  "more": len(seqs) - 1}).decode(),
                ))
            else:
                conn.execute(CLEAR_ALERT, ("chain_broken", site, agent, []))

    def _advance(self, gap: _Gap, now: datetime, status: dict[str, Any] | None, *,
                 repair: Any) -> None:
        start = _archive_start(status)
        if (gap.state == "permanent" and start is not None and start <= gap.lo
                and gap.attempts < repair.max_attempts):
            # Made permanent on an archive claim, and a later signed statement shows the
            # archive holds the range: ask again.
            gap.state, gap.last_request = "open", None
            log.warning("permanent gap re-opened: the agent's signed status shows its archive"
                        " holds it", site=gap.site, agent=gap.agent, from_seq=gap.lo,
                        to_seq=gap.hi, archive_first_seq=start)
        if gap.state == "permanent" or now - gap.first_seen < timedelta(seconds=repair.grace_s):
            return
        unsent = _signed(status).get("unsent_from")
        # Still in the agent's backlog (on its way) when its status was published: asked for
        # all the same (cheap, and the answer refreshes that status), never made permanent.
        in_backlog = isinstance(unsent, int) and gap.lo >= unsent
        if start is not None and gap.hi < start:
            gap.state = "permanent"
            log.warning("gap older than the agent's archive", site=gap.site, agent=gap.agent,
                        from_seq=gap.lo, to_seq=gap.hi, archive_first_seq=start)
            return
        if gap.last_request is not None and now - gap.last_request < timedelta(
            seconds=repair.retry_s
        ):
            return
        if gap.attempts >= repair.max_attempts and not in_backlog:
            gap.state = "permanent"
            log.warning("gap not repaired; permanent", site=gap.site, agent=gap.agent,
                        from_seq=gap.lo, to_seq=gap.hi, attempts=gap.attempts)
            return
        if self.signer is None:
            if not self._said_unsigned:
                log.warning("no signing key configured ([signing] key_file): replay requests"
                            " are not sent, gaps stay open")
                self._said_unsigned = True
            return
        topic = f"{self.prefix}/{gap.site}/{gap.agent}/replay/request"
        self.publish(topic, build_request(self.signer, site=gap.site, agent=gap.agent,
                                          from_seq=gap.lo, to_seq=gap.hi, created=now))
        self.requests_sent += 1
        gap.attempts += 1
        gap.last_request = now
        gap.state = "requested"
        log.info("replay requested", site=gap.site, agent=gap.agent, from_seq=gap.lo,
                 to_seq=gap.hi, attempt=gap.attempts)

    def _alerts(self, conn: psycopg.Connection[Any], site: str, agent: str, *,
                keep: list[_Gap], now: datetime, grace_s: float) -> None:
        open_keys: list[str] = []
        permanent_keys: list[str] = []
        for gap in keep:
            key = f"{gap.lo}-{gap.hi}"
            if gap.state == "permanent":
                permanent_keys.append(key)
                conn.execute(REFRESH_ALERT, (
                    "gap_permanent", site, agent, key,
                    "central.gap_permanent",
                    orjson.dumps({"from_seq": gap.lo, "to_seq": gap.hi,
                                  "attempts": gap.attempts}).decode(),
                ))
            elif now - gap.first_seen >= timedelta(seconds=grace_s):
                open_keys.append(key)
                conn.execute(REFRESH_ALERT, (
                    "gap", site, agent, key,
                    "central.gap",
                    orjson.dumps({"from_seq": gap.lo, "to_seq": gap.hi,
                                  "attempts": gap.attempts}).decode(),
                ))
        conn.execute(CLEAR_ALERT, ("gap", site, agent, open_keys))
        conn.execute(CLEAR_ALERT, ("gap_permanent", site, agent, permanent_keys))
