"""Durable store-and-forward outbox (SQLite, WAL).

Two stages, each one transaction:

1. `submit_batch()`ed batches (a driver's poll, already serialised: the items' JSON joined
   by commas) are committed together, within `max_commit_delay_ms` of the oldest (sooner
   when COMMIT_BYTES wait, a state write is queued, or on flush and stop). Only then do they
   count as acquired; a power cut loses at most what waited for that commit. `submit()` is a
   batch of one item (alerts, audit).
2. Batch rows of one (stream, device) are cut into envelopes of at most `batch_max_items`
   items once enough are waiting or the oldest is `batch_max_age_ms` old. An envelope's items
   are the rows' texts joined: nothing is parsed back or re-encoded. In the same transaction
   the envelope gets the next `seq`, the hash of the previous payload as `prev`, and its
   signature. A batch due before the next commit is cut in this one (its rows are written
   once, in the envelope); only the others are kept in `batches` meanwhile. Envelopes are
   stored compact: the payload zlib-compressed, the raw signature, the key's protected header
   once in `signers`; the published bytes are rebuilt from them, byte-identical.

The publisher reads unsent envelopes in seq order; a PUBACK marks an envelope sent (a small row
in `sent`, written with the next commit cycle). A sent envelope stays where it is, byte-identical,
as the replay archive, until it is older than `archive_days` or beyond `archive_bytes`; nothing
is copied. A replay after a crash re-sends byte-identical envelopes (a PUBACK not yet recorded
included), which consumers deduplicate on `seq`/`id`.

The outbox does not own the database: it is the host of a `agent.state.database.StateDatabase`
(one thread owns the connection; the event loop talks to it through a queue, so a slow disk
never stalls device I/O), which commits the outbox's rows together with the writes of QC,
alerts, audit and prescriptions and keeps the disk-full retry, the free-space measurements and
the damaged-file check. The envelopes are cut by `agent.delivery.cutter`, the sent ones kept by
`agent.delivery.archive`; the tables, connection settings and migrations are
`agent.state.schema`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import structlog

from agent.core.reading import rfc3339
from agent.delivery.archive import DELETE_CHUNK, ReplayArchive
from agent.delivery.cutter import (
    EnvelopeCutter,
    TopicFn,
    envelope_spans,
    published_bytes,
)
from agent.delivery.signing import Signer
from agent.delivery.verification import MAX_ENVELOPE_ITEM_BYTES
from agent.state.damage import DamageReport
from agent.state.database import StateDatabase, StateDatabaseError, Write, fault_point
from agent.state.diskspace import DiskSpacePolicy, is_disk_full
from agent.state.pressure import Pressure
from agent.state.schema import (
    has_column,
    has_table,
    migrate_archive,
    migrate_compact,
    migrate_pending,
    signer_id,
    signers,
    stored_head,
    used_bytes,
)

log = structlog.get_logger("isoedge.outbox")

T = TypeVar("T")

RECENT_BYTES = 4 * 1024 * 1024  # bodies of envelopes just cut kept for the publisher
ARCHIVE_YIELD = 0.7  # under quota pressure the archive shrinks until the database is this full

MAX_IN_FLIGHT = 20_000  # uncommitted items before producers are made to wait
QUOTA_HIGH = 0.9  # pause low-priority acquisition and alert
QUOTA_LOW = 0.8  # resume below this
DISK_USAGE_INTERVAL_S = 0.1  # routine measurements of the database's size at most this often,
USAGE_SKIP_BELOW = 0.5  # ... while below this share of the quota (then every cycle)
COMMIT_BYTES = 256 * 1024  # items waiting that make a commit due before the delay is up
ACK_COMMIT_S = 0.05  # acknowledgements recorded at least this soon when no data is committed
# ... or, with a commit delay, within this many commit delays: they ride with the readings'
# commits. One lost in a crash means that envelope is sent again; the durability tests hold
# the agent to re-sending no more than the last in-flight window, hence one delay, not more.
ACK_DELAYS = 1
# An envelope `e` still to be sent: no PUBACK recorded for it (sent ones stay as the archive).
_UNSENT = "NOT EXISTS (SELECT 1 FROM sent s WHERE s.seq = e.seq)"


OutboxError = StateDatabaseError
"""The outbox cannot store or hand out envelopes (its thread has failed)."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """A signed envelope waiting for PUBACK."""

    seq: int
    topic: str
    body: bytes
    n_items: int


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """What `isoedge outbox status` shows."""

    envelopes: int
    items: int
    pending_items: int
    oldest_unsent: str | None
    disk_bytes: int
    last_seq: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "envelopes": self.envelopes,
            "items": self.items,
            "pending_items": self.pending_items,
            "oldest_unsent": self.oldest_unsent,
            "disk_bytes": self.disk_bytes,
            "last_seq": self.last_seq,
        }


@dataclass(slots=True)
class _Batch:
    """Committed (or about to be) rows of one (stream, device) not yet in an envelope."""

    stream: str
    device: str
    ids: list[int]
    counts: list[int]  # items per row
    texts: list[str]  # the row's items, serialised and joined by commas
    oldest: float  # time.monotonic() of the first row
    n_items: int = 0
    n_bytes: int = 0
    sizes: list[int] = field(default_factory=list)  # UTF-8 bytes per row
    unsaved: list[tuple[int, str, str, float, int, str]] = field(default_factory=list)

    def add(self, row_id: int, count: int, text: str) -> None:
        self.ids.append(row_id)
        self.counts.append(count)
        size = len(text.encode("utf-8"))
        self.sizes.append(size)
        self.n_bytes += size
        self.texts.append(text)
        self.n_items += count


class OversizedItemError(ValueError):
    """A stream item larger than any envelope may carry: refused at submission, never cut.

    An envelope holds at most `MAX_ENVELOPE_ITEM_BYTES` of items, and every verifier refuses a
    larger one; an item beyond that would be published in an envelope the ingest must refuse.
    It is neither truncated (a QC, audit or alert record cut short would be a false record)
    nor queued: the submission fails, its caller is told, the error is logged and counted.
    """

    def __init__(self, stream: str, size: int) -> None:
        super().__init__(
            f"{stream} item of {size} bytes is larger than an envelope may carry"
            f" ({MAX_ENVELOPE_ITEM_BYTES} bytes); refused"
        )
        self.stream = stream
        self.size = size


def oversized_bytes(text: str) -> int | None:
    """The UTF-8 size of an item's (or a row of items') JSON when it exceeds an envelope's."""
    if 4 * len(text) <= MAX_ENVELOPE_ITEM_BYTES:
        return None
    size = len(text.encode("utf-8", "surrogatepass"))
    return size if size > MAX_ENVELOPE_ITEM_BYTES else None


class Outbox:
    """The agent's durable queue of signed envelopes: the host of the state database.

    The state database (`StateDatabase`, given as `state` or made of `path` and the storage
    options) commits the writes of QC, alerts, audit and prescriptions together with acquired
    readings and the envelopes cut from them, one transaction a cycle. The outbox starts and
    closes it (it cannot open without its host).
    """

    def __init__(
        self,
        path: Path,
        signer: Signer,
        *,
        site: str,
        agent: str,
        topic_for: TopicFn,
        quota_bytes: int,
        fsync: str = "full",
        batch_max_items: int = 500,
        batch_max_age_ms: int = 25,
        max_commit_delay_ms: int = 1000,
        commit_interval_ms: int | None = None,
        archive_days: float = 0.0,
        archive_bytes: int = 0,
        min_free_bytes: int = 0,
        reserve_file_bytes: int = 0,
        on_damaged: str = "refuse",
        state: StateDatabase | None = None,
    ) -> None:
        if state is None:
            state = StateDatabase(
                path,
                fsync=fsync,
                min_free_bytes=min_free_bytes,
                reserve_file_bytes=reserve_file_bytes,
                on_damaged=on_damaged,
            )
        self.state = state
        state.attach(self)
        # No write may queue a stream item an envelope cannot carry (OversizedItemError).
        state.item_guard = self._guard_item
        self.path = state.path
        # Items refused at submission for their size (OversizedItemError), by stream.
        self.refused_oversized: dict[str, int] = {}
        # Sent envelopes are kept (byte-identical) for replay requests of the central ingest,
        # for `archive_days` and within `archive_bytes`; 0 keeps none.
        self.archive = ReplayArchive(archive_days, archive_bytes)
        self.archive.before_delete = self._save_head
        self._sent_floor = 0  # every envelope with seq <= this has been sent (or pruned)
        self._usage_measured = 0.0
        self._written_since_measured = 0  # bytes of envelopes and rows since that
        self.signer = signer
        self.cutter = EnvelopeCutter(signer, site=site, agent=agent, topic_for=topic_for)
        self.quota_bytes = quota_bytes
        self.fsync = fsync
        self.batch_max_items = batch_max_items
        self.batch_max_age = batch_max_age_ms / 1000.0
        # The most an acquired reading waits to become durable (`commit_interval_ms` is the
        # older name of the same bound). Sooner when COMMIT_BYTES of items wait, or a state
        # write, a flush or the stop asks for a commit.
        delay_ms = max_commit_delay_ms if commit_interval_ms is None else commit_interval_ms
        self._init_commit_state(delay_ms / 1000.0)
        # Items go through a plain list, swapped whole by the owner thread.
        self._items: list[tuple[str, str, int, str]] = []
        self._batches: dict[tuple[str, str], _Batch] = {}
        self._next_pending_id = 1
        self._new_envelopes = asyncio.Event()
        self._submitted = 0
        self._committed = 0
        self.disk_bytes = 0
        self.quota_state = Pressure.OK
        self.on_quota_change: Callable[[Pressure, int], None] | None = None
        # Disk full (issue 14): a cycle that fails for lack of space is rolled back and its
        # items kept here, in order, for the next attempt (the state database keeps the
        # writes); acknowledgements likewise.
        self._retry_items: list[tuple[str, str, int, str]] = []
        self._deferred_acks: list[int] = []
        self._deferred_meta: dict[str, str] = {}
        self.committed_by_stream: dict[str, int] = {}
        self.held_back_seconds = 0.0  # producers waiting in wait_capacity (event loop only)

    @property
    def last_seq(self) -> int:
        """The seq of the last envelope cut (the chain head)."""
        return self.cutter.last_seq

    def _init_commit_state(self, commit_delay: float) -> None:
        """What the owner thread keeps to decide when to commit, and what it caches."""
        self.commit_delay = commit_delay
        self._pending_bytes = 0  # bytes of items submitted since the last swap (approximate)
        self._oldest_item: float | None = None  # monotonic time the owner first saw them
        self._first_ack: float | None = None  # monotonic time of the oldest unrecorded PUBACK
        self._capacity = asyncio.Event()  # set by the owner thread after a commit
        self._capacity_waiting = False
        self._recent: dict[int, bytes] = {}  # seq -> published bytes of envelopes just cut
        self._recent_bytes = 0
        self._signer_id = 0
        self._protected_by_id: dict[int, str] = {}

    # ----------------------------------------------------------- state database
    async def start(self) -> None:
        """Open (or create) the state database, with the outbox as its host."""
        await self.state.start()

    async def close(self) -> None:
        """Commit what waits, then close the state database."""
        await self.state.close()

    @property
    def failed(self) -> asyncio.Event:
        """Set when the state database's thread has died (see `failure`)."""
        return self.state.failed

    @property
    def failure(self) -> BaseException | None:
        """Why the state database's thread died, if it did."""
        return self.state.failure

    @property
    def alive(self) -> bool:
        """False once the state database's thread has died."""
        return self.state.alive

    @property
    def space(self) -> DiskSpacePolicy:
        """The state database's free-space policy."""
        return self.state.space

    @property
    def disk_state(self) -> Pressure:
        """The state database's disk state (free space, a failed write)."""
        return self.state.disk_state

    @property
    def disk_full_total(self) -> int:
        """Cycles or acknowledgements that failed for lack of space."""
        return self.state.disk_full_total

    @property
    def damage(self) -> DamageReport | None:
        """What the state database found damaged at start (and moved aside), if anything."""
        return self.state.damage

    # ------------------------------------------------------------------ producer
    def submit(self, stream: str, device: str, item_json: str) -> None:
        """Queue one item (already JSON text). Thread-safe, never blocks, never drops."""
        self.submit_batch(stream, device, 1, item_json)

    def submit_batch(self, stream: str, device: str, n_items: int, items_json: str) -> None:
        """Queue a batch: `n_items` items' JSON joined by commas. Never blocks, never drops.

        A batch of more than `batch_max_items` items still goes out whole in one envelope;
        the pipeline splits larger ones. A batch larger than an envelope may carry raises
        `OversizedItemError` (logged and counted) and is not queued.
        """
        if (size := oversized_bytes(items_json)) is not None:
            raise self._refuse_oversized(stream, device, size)
        self._submitted += n_items
        self._items.append((stream, device, n_items, items_json))
        self._pending_bytes += len(items_json)
        # The owner thread is woken for the first item (it starts the commit delay then),
        # when enough bytes wait, or for every item when there is no delay: not per reading.
        if len(self._items) == 1 or self._pending_bytes >= COMMIT_BYTES or self.commit_delay <= 0:
            self.state.wake()

    def _guard_item(self, stream: str, device: str, text: str, tag: str) -> BaseException | None:
        """The state database's check of a write's stream items: none larger than an envelope.

        The whole write is refused (its future fails with `OversizedItemError`, logged and
        counted): a change is never committed without its record, and a record never cut.
        """
        if (size := oversized_bytes(text)) is None:
            return None
        return self._refuse_oversized(stream, device, size, tag)

    def _refuse_oversized(
        self, stream: str, device: str, size: int, tag: str = ""
    ) -> OversizedItemError:
        self.refused_oversized[stream] = self.refused_oversized.get(stream, 0) + 1
        log.error(
            "stream item larger than an envelope may carry; refused",
            stream=stream,
            device=device,
            bytes=size,
            limit=MAX_ENVELOPE_ITEM_BYTES,
            write=tag,
        )
        return OversizedItemError(stream, size)

    @property
    def saturated(self) -> bool:
        """More than `MAX_IN_FLIGHT` items wait for their commit: producers should wait."""
        return self._submitted - self._committed > MAX_IN_FLIGHT

    async def wait_capacity(self) -> None:
        """Backpressure: return once the uncommitted queue is back under half its bound.

        Memory stays bounded and a shutdown flush stays short however fast a source is. The
        time spent waiting is summed in `held_back_seconds` (a metric: a slow disk shows there).
        """
        started = time.monotonic()
        try:
            await self._wait_capacity()
        finally:
            self.held_back_seconds += time.monotonic() - started

    async def _wait_capacity(self) -> None:
        while self._submitted - self._committed > MAX_IN_FLIGHT // 2:
            if self.state.failure is not None:
                raise OutboxError(f"outbox is not running: {self.state.failure!r}")
            # The owner thread sets the event after each commit while someone waits here.
            self._capacity.clear()
            self._capacity_waiting = True
            self.state.wake()
            await self._capacity.wait()

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every item submitted so far is committed and cut into envelopes.

        Acknowledgements made before the call are recorded by then too.
        """
        target = self._submitted
        done: Future[None] = Future()

        def _mark() -> None:
            if done.set_running_or_notify_cancel():
                self.state.cycle(force=True)
                done.set_result(None)

        deadline = time.monotonic() + timeout
        self.state.enqueue(_mark)  # the forced cycle commits everything submitted before it
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                await asyncio.wrap_future(done)
        except TimeoutError:
            return False
        return self._committed >= target

    # ----------------------------------------------------------------- consumer
    async def fetch(
        self, after_seq: int, limit: int, below_seq: int | None = None
    ) -> list[Envelope]:
        """Envelopes with `after_seq < seq (< below_seq)`, oldest first."""

        def _fetch() -> list[Envelope]:
            db = self.state.connection()
            upper = below_seq if below_seq is not None else 2**62
            rows = db.execute(
                f"SELECT {_COLUMNS}, n_items FROM envelopes e WHERE seq > ? AND seq < ?"  # noqa: S608 - a fixed fragment
                f" AND {_UNSENT} ORDER BY seq LIMIT ?",
                (max(after_seq, self._sent_floor), upper, limit),
            ).fetchall()
            # PUBACKed ones not yet recorded (that waits for the next commit) are not waiting.
            acked = set(self._deferred_acks)
            return [
                Envelope(int(r[0]), str(r[1]), self._body(r), int(r[6]))
                for r in rows
                if int(r[0]) not in acked
            ]

        return await self.state.call(_fetch)

    @property
    def archive_bytes(self) -> int:
        """Published bytes of the sent envelopes kept as the replay archive."""
        return self.archive.bytes

    def acknowledge(self, seqs: list[int]) -> None:
        """Envelopes the broker has PUBACKed: marked sent (kept as the archive) or deleted.

        Handed to the owner thread without waiting for it (every later job, a read, runs after
        it) and recorded with the next commit cycle, not in a transaction of their own: an
        acknowledgement lost in a crash only means that envelope is sent again, which consumers
        deduplicate.
        """
        if not seqs:
            return

        def _ack() -> None:
            if self._first_ack is None:
                self._first_ack = time.monotonic()
            self._deferred_acks.extend(seqs)

        # Not awaited: nobody needs an answer, and every later job (a read) runs after it.
        self.state.enqueue(_ack)

    async def archived(self, from_seq: int, to_seq: int, limit: int = 64) -> list[Envelope]:
        """Archived (sent) envelopes with from_seq <= seq <= to_seq, oldest first."""

        def _fetch() -> list[Envelope]:
            self._apply_deferred()
            rows = (
                self.state.connection()
                .execute(
                    f"SELECT {_COLUMNS} FROM sent s JOIN envelopes e ON e.seq = s.seq"  # noqa: S608 - a fixed fragment
                    " WHERE s.seq >= ? AND s.seq <= ? ORDER BY s.seq LIMIT ?",
                    (from_seq, to_seq, limit),
                )
                .fetchall()
            )
            return [Envelope(int(r[0]), str(r[1]), self._body(r), 0) for r in rows]

        return await self.state.call(_fetch)

    async def archive_range(self) -> tuple[int, int] | None:
        """(first, last) seq held in the archive, None when it is empty."""

        def _range() -> tuple[int, int] | None:
            self._apply_deferred()  # the archive as the PUBACKs so far make it (rare reads)
            return self.archive.range(self.state.connection())

        return await self.state.call(_range)

    async def unsent_from(self) -> int | None:
        """Oldest seq not yet PUBACKed (still to be sent), None when the backlog is empty."""

        def _first() -> int | None:
            self._apply_deferred()  # PUBACKs waiting for the next commit: recorded now
            return _first_unsent(self.state.connection(), self._sent_floor)

        return await self.state.call(_first)

    async def get_meta(self, key: str) -> str | None:
        """A value remembered with the outbox (e.g. the last signing key id)."""

        def _get() -> str | None:
            row = self.state.connection().execute("SELECT value FROM meta WHERE key = ?", (key,))
            found = row.fetchone()
            return None if found is None else str(found[0])

        return await self.state.call(_get)

    async def set_meta(self, key: str, value: str) -> None:
        """Remember a value durably with the outbox."""

        def _set() -> None:
            self._deferred_meta[key] = value
            self._apply_deferred()

        await self.state.call(_set)

    async def wait_for_envelopes(self, timeout: float) -> None:
        """Return when new envelopes may be available (or after `timeout`)."""
        try:
            async with asyncio.timeout(timeout):
                await self._new_envelopes.wait()
        except TimeoutError:
            return
        finally:
            self._new_envelopes.clear()

    async def stats(self) -> OutboxStats:
        """Backlog, oldest unsent envelope, disk use.

        An envelope PUBACKed but not yet recorded (that waits for the next commit cycle) no
        longer counts as waiting.
        """
        return await self.state.call(
            lambda: _stats(self.state.connection(), acked=self._deferred_acks)
        )

    # -------------------------------------------------------------- owner thread
    def _body(self, row: tuple[Any, ...]) -> bytes:
        """The signed bytes of an envelope row (`_COLUMNS`), from memory when just cut."""
        cached = self._recent.get(int(row[0]))
        if cached is not None:
            return cached
        return _rebuild(row, self._protected_by_id)

    def _remember(self, seq: int, body: bytes) -> None:
        """Keep a just-cut envelope's bytes for the publisher (bounded, oldest dropped)."""
        self._recent[seq] = body
        self._recent_bytes += len(body)
        while self._recent_bytes > RECENT_BYTES and self._recent:
            oldest = next(iter(self._recent))
            self._recent_bytes -= len(self._recent.pop(oldest))

    def _forget(self, seqs: list[int]) -> None:
        for seq in seqs:
            body = self._recent.pop(seq, None)
            if body is not None:
                self._recent_bytes -= len(body)

    # ------------------------------------------- the state database's host (owner thread)
    def load(self, db: sqlite3.Connection) -> None:
        """Migrate the outbox's tables; load the chain head, the archive, pending batches."""
        migrate_compact(db)
        self._signer_id = signer_id(db, self.signer.protected_header())
        self._protected_by_id = signers(db)
        if db.execute("SELECT 1 FROM chain WHERE k = 1").fetchone() is None:
            db.execute("INSERT INTO chain (k, last_seq, last_hash) VALUES (1, 0, '')")
            db.commit()
        self.cutter.reset(*stored_head(db))
        migrate_pending(db)
        migrate_archive(db)
        self.archive.load(db)
        self._sent_floor = (_first_unsent(db, 0) or self.last_seq + 1) - 1
        self._load_pending(db)

    def _load_pending(self, db: sqlite3.Connection) -> None:
        """Items committed but not yet in an envelope: batch them again, oldest first."""
        now = time.monotonic()
        for pid, stream, device, count, items in db.execute(
            "SELECT id, stream, device, n_items, items FROM batches ORDER BY id"
        ):
            # Batches committed before a crash: cut them again, oldest first, right away.
            batch = self._batches.setdefault(
                (stream, device), _Batch(stream, device, [], [], [], now - self.batch_max_age)
            )
            batch.add(int(pid), int(count), str(items))
            self._next_pending_id = max(self._next_pending_id, int(pid) + 1)

    def loaded(self, db: sqlite3.Connection, damage: DamageReport | None) -> None:
        """Continue the chain after a damaged file moved aside; measure the disk."""
        if damage is not None and damage.continued_seq is not None:
            self.cutter.reset(damage.continued_seq, damage.continued_hash)
            db.execute(
                "UPDATE chain SET last_seq = ?, last_hash = ? WHERE k = 1",
                (self.last_seq, self.cutter.last_hash),
            )
            db.commit()
        self._update_disk_usage()

    def started(self) -> None:
        """Log what the outbox found."""
        log.info(
            "outbox opened",
            path=str(self.path),
            last_seq=self.last_seq,
            recovered_pending=sum(b.n_items for b in self._batches.values()),
        )

    def on_failure(self) -> None:
        """The state database's thread died."""
        if self.state.loop is not None:
            # Wake the publisher and anyone waiting, so they see the failure at once.
            self.state.loop.call_soon_threadsafe(self._new_envelopes.set)
            self.state.loop.call_soon_threadsafe(self._capacity.set)

    def woken(self) -> None:
        """The commit delay starts when the owner thread first sees waiting items."""
        if self._items and self._oldest_item is None:
            self._oldest_item = time.monotonic()

    def stopped(self, stored: bool) -> None:
        """After the last cycle: the chain head into its row, or what could not be stored."""
        if stored:
            with contextlib.suppress(sqlite3.Error):  # for a version that reads only the row
                self._save_head(self.state.connection())
                self.state.connection().commit()
            return
        log.critical(
            "disk full at shutdown: acquired items and state writes not stored",
            items=len(self._retry_items),
        )

    def _take_items(self) -> list[tuple[str, str, int, str]]:
        """Everything submitted since the last cycle, after what a failed cycle left to retry."""
        items = self._swap_items()
        if self._retry_items:
            items, self._retry_items = self._retry_items + items, []
        return items

    def commit_due(self) -> bool:
        """A commit now: the delay is up, enough waits, or something cannot wait."""
        if (
            self._retry_items
            or self._deferred_meta
            or self._pending_bytes >= COMMIT_BYTES
            or self._submitted - self._committed > MAX_IN_FLIGHT // 2
        ):
            return True
        deadline = self.deadline()
        return deadline is not None and deadline <= 0.0

    def _acks_due(self, force: bool) -> bool:
        """Record the waiting PUBACKs in this commit (else they wait for a later one)."""
        if force or self._deferred_meta or self._first_ack is None:
            return True
        if self.disk_state != Pressure.OK or self.quota_state != Pressure.OK:
            return True  # recording them lets the archive give its room back
        wait = max(ACK_DELAYS * self.commit_delay, ACK_COMMIT_S)
        return time.monotonic() - self._first_ack >= wait - self.commit_delay

    def deadline(self) -> float | None:
        """Seconds until the next commit is due (None: nothing waits for one)."""
        now = time.monotonic()
        deadlines = []
        if self._oldest_item is not None:
            deadlines.append(self._oldest_item + self.commit_delay - now)
        if self._first_ack is not None and self.disk_state == Pressure.OK:
            # Acknowledgements ride with the next commit; when no data brings one, this.
            wait = max(ACK_DELAYS * self.commit_delay, ACK_COMMIT_S)
            deadlines.append(self._first_ack + wait - now)
        cut = self._next_deadline()
        if cut is not None:
            deadlines.append(cut)
        return None if not deadlines else max(0.0, min(deadlines))

    def idle(self) -> bool:
        """No items or acknowledgements wait to be retried after a full disk."""
        return not (self._retry_items or self._deferred_acks)

    def relieve(self) -> None:
        """Under disk pressure acknowledgements go first, in transactions of their own."""
        if self._deferred_acks or self._deferred_meta:
            self._apply_deferred()

    def commit_cycle(self, writes: list[Write], *, force: bool) -> None:
        """The next cycle; on a full disk its items are kept, in order, for the next try."""
        items = self._take_items()
        try:
            self._commit_cycle(items, writes, force=force)
        except sqlite3.Error as exc:
            if is_disk_full(exc):
                self._retry_items = items + self._retry_items
            raise
        counts = self.committed_by_stream
        for stream, _device, count, _text in items:
            counts[stream] = counts.get(stream, 0) + count
        for write in writes:
            for stream, _device, _text in write.items:
                counts[stream] = counts.get(stream, 0) + 1

    def cycle_done(self) -> None:
        """A backlog drained faster than one chunk a commit: the rest, chunk by chunk."""
        if len(self._deferred_acks) >= DELETE_CHUNK:
            self.state.checkpoint()
            self._apply_deferred()

    def rolled_back(self, db: sqlite3.Connection) -> None:
        """After a rollback: the chain head and the pending batches as the database has them."""
        self.cutter.reset(*stored_head(db))
        self._batches.clear()
        self._recent.clear()  # envelopes of the rolled-back transaction are gone
        self._recent_bytes = 0
        self._load_pending(db)
        self.archive.load(db)

    def _apply_deferred(self) -> None:
        """Acknowledgements and meta values in transactions of their own (kept when full).

        DELETE_CHUNK acknowledgements a transaction, the WAL checkpointed between them.
        """
        db = self.state.connection()
        while self._deferred_acks or self._deferred_meta:
            try:
                staged = self._stage_deferred(db)
                db.commit()
            except sqlite3.Error as exc:
                if not is_disk_full(exc):
                    raise
                self.state.write_failed(exc)
                return
            self._deferred_done(db, staged)
            if self._deferred_acks:
                self.state.checkpoint()  # DELETE_CHUNK at a time: the WAL is reused, not grown

    def _stage_deferred(self, db: sqlite3.Connection) -> tuple[int, dict[str, str]]:
        """Write the waiting acknowledgements and meta values into the open transaction."""
        acks, meta = self._deferred_acks[:DELETE_CHUNK], dict(self._deferred_meta)
        if acks:
            self._mark_sent(db, acks)
        if meta:
            db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(meta.items())
            )
        return len(acks), meta

    def _deferred_done(self, db: sqlite3.Connection, staged: tuple[int, dict[str, str]]) -> None:
        """After the commit that stored them: forget what `_stage_deferred` wrote."""
        n_acks, meta = staged
        if not n_acks and not meta:
            return
        self._forget(self._deferred_acks[:n_acks])
        del self._deferred_acks[:n_acks]
        self._first_ack = time.monotonic() if self._deferred_acks else None
        for key, value in meta.items():
            if self._deferred_meta.get(key) == value:
                del self._deferred_meta[key]
        if n_acks:
            self._sent_floor = (_first_unsent(db, self._sent_floor) or self.last_seq + 1) - 1
            self._update_disk_usage(soon=True)  # draining the backlog lifts a quota pause

    def _save_head(self, db: sqlite3.Connection) -> None:
        """The chain head into its row (in the caller's transaction), before envelopes go.

        Deleting the newest envelope would otherwise lose the head `stored_head` derives.
        """
        db.execute(
            "UPDATE chain SET last_seq = ?, last_hash = ? WHERE k = 1",
            (self.last_seq, self.cutter.last_hash),
        )

    def _mark_sent(self, db: sqlite3.Connection, seqs: list[int]) -> None:
        """PUBACKed envelopes: kept in place as the replay archive while the disk allows.

        Marking is a small `sent` row; the envelope itself is neither copied nor rewritten.
        """
        if self.archive.enabled and self.disk_state == Pressure.OK:
            self.archive.keep(db, seqs)
        else:
            self._save_head(db)
            db.executemany("DELETE FROM envelopes WHERE seq = ?", [(s,) for s in seqs])
        self.archive.prune(db)  # one chunk at most: the next acknowledgements take the rest

    def yield_space(self) -> None:
        """Under disk pressure the replay archive gives its pages to the backlog."""
        if not self.archive.bytes:
            return
        db = self.state.connection()
        try:
            self.archive.prune_chunked(db, lambda: self.archive.bytes, self.state.checkpoint)
        except sqlite3.Error as exc:
            if not is_disk_full(exc):
                raise
            with contextlib.suppress(sqlite3.Error):
                db.rollback()
            self.archive.load(db)
            return
        log.warning("replay archive emptied to make room on the disk")

    def _swap_items(self) -> list[tuple[str, str, int, str]]:
        """Take everything submitted so far, in one swap.

        No per-item hand-off that would have to win the GIL back from a busy event loop for
        every reading.
        """
        items, self._items = self._items, []
        self._pending_bytes = 0
        self._oldest_item = None
        return items

    def _commit_cycle(
        self,
        items: list[tuple[str, str, int, str]],
        writes: list[Write] | None = None,
        *,
        force: bool = False,
    ) -> None:
        """One transaction, one fsync: state writes, new items, and every due batch cut.

        Rows whose envelope is cut in this same cycle go straight into it; only the rest are
        written to `batches`.
        """
        db = self.state.connection()
        writes = writes or []
        applied = StateDatabase.apply_writes(db, writes)
        fresh = self._add_to_batches(items)
        for write, _result in applied:
            self._add_to_batches([(st, dev, 1, text) for st, dev, text in write.items])
        created = self._form_envelopes(force=force)
        self._save_pending(db)
        # Acknowledgements ride along, once due (not in every commit: the `sent` pages are
        # then rewritten once per ACK_DELAYS commits), or at once under disk pressure.
        staged = self._stage_deferred(db) if self._acks_due(force) else (0, {})
        if fresh or created or applied or staged[0] or staged[1]:
            fault_point("before-commit", applied)
            db.commit()
            fault_point("after-commit", applied)
        self._deferred_done(db, staged)
        for write, result in applied:
            write.done.set_result(result)
        self._committed += fresh
        self._notify_capacity()
        if created:
            self._update_disk_usage(soon=True)
            if self.state.loop is not None:
                self.state.loop.call_soon_threadsafe(self._new_envelopes.set)

    def _notify_capacity(self) -> None:
        """After a commit: wake a producer held back in `wait_capacity`, if one is."""
        if self._capacity_waiting and self.state.loop is not None:
            self._capacity_waiting = False
            self.state.loop.call_soon_threadsafe(self._capacity.set)

    def _save_pending(self, db: sqlite3.Connection) -> None:
        """Rows of batches not cut this cycle go to `batches` (inside the transaction)."""
        rows = [row for batch in self._batches.values() for row in batch.unsaved]
        if rows:
            self._written_since_measured += sum(len(row[5]) for row in rows)
            db.executemany(
                "INSERT INTO batches (id, stream, device, created, n_items, items)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            for batch in self._batches.values():
                batch.unsaved.clear()

    def _next_deadline(self) -> float | None:
        if not self._batches:
            return None
        oldest = min(b.oldest for b in self._batches.values())
        return max(0.0, oldest + self.batch_max_age - time.monotonic())

    def _add_to_batches(self, items: list[tuple[str, str, int, str]]) -> int:
        now_wall = time.time()
        now = time.monotonic()
        fresh = 0
        for stream, device, count, text in items:
            pid = self._next_pending_id
            self._next_pending_id += 1
            batch = self._batches.get((stream, device))
            if batch is None:
                batch = self._batches[(stream, device)] = _Batch(stream, device, [], [], [], now)
            batch.add(pid, count, text)
            batch.unsaved.append((pid, stream, device, now_wall, count, text))
            fresh += count
        return fresh

    def _form_envelopes(self, *, force: bool = False) -> bool:
        """Cut due batches into signed envelopes (inside the caller's transaction)."""
        # Due now, or due before the next cycle could cut it: then its rows go straight into
        # the envelope instead of into `batches` first (one write per reading, not two).
        aged = time.monotonic() + self.commit_delay - self.batch_max_age
        due = [
            key
            for key, batch in self._batches.items()
            if force
            or batch.n_items >= self.batch_max_items
            or batch.n_bytes >= MAX_ENVELOPE_ITEM_BYTES
            or batch.oldest <= aged
        ]
        if not due:
            return False
        db = self.state.connection()
        for key in due:
            batch = self._batches.pop(key)
            saved = len(batch.ids) - len(batch.unsaved)  # the first `saved` are in `batches`
            spans = envelope_spans(batch.counts, batch.sizes, self.batch_max_items)
            for start, end, n_items in spans:
                self._write_envelope(
                    db, batch.stream, batch.device, batch.texts[start:end], n_items
                )
                if start < saved:
                    db.execute(
                        "DELETE FROM batches WHERE id BETWEEN ? AND ? AND stream = ?"
                        " AND device = ?",
                        (batch.ids[start], batch.ids[min(end, saved) - 1], batch.stream,
                         batch.device),
                    )  # fmt: skip
        # The chain row is not rewritten here: the newest envelope is the head (stored_head).
        return True

    def _write_envelope(
        self, db: sqlite3.Connection, stream: str, device: str, rows: list[str], n_items: int
    ) -> None:
        """Cut the next envelope of `rows` and store it compact (in the caller's transaction)."""
        cut = self.cutter.cut(stream, device, rows, n_items)
        self._written_since_measured += len(cut.packed) + len(cut.signature)
        db.execute(
            "INSERT INTO envelopes (seq, topic, stream, device, n_items, created, body, payload,"
            " sig, signer, size) VALUES (?, ?, ?, ?, ?, ?, x'', ?, ?, ?, ?)",
            (
                cut.seq,
                cut.topic,
                stream,
                device,
                n_items,
                time.time(),
                cut.packed,
                cut.signature,
                self._signer_id,
                len(cut.body),
            ),
        )
        self._remember(cut.seq, cut.body)

    def _update_disk_usage(self, *, soon: bool = False) -> None:
        """Measure the database and free space; decide the quota state.

        `soon`: after a routine cycle, at most every DISK_USAGE_INTERVAL_S while the quota and
        the disk are fine and the last measurement was well below the quota (five PRAGMAs and a
        statvfs per cycle were a tenth of the owner thread's time); otherwise every time.
        """
        now = time.monotonic()
        # Twice the bytes written since: room for page and index overhead.
        estimate = self.disk_bytes + 2 * self._written_since_measured
        if (
            soon
            and self.quota_state == Pressure.OK
            and self.disk_state == Pressure.OK
            and estimate < USAGE_SKIP_BELOW * self.quota_bytes
            and now - self._usage_measured < DISK_USAGE_INTERVAL_S
        ):
            return
        self._usage_measured = now
        self._written_since_measured = 0
        db = self.state.connection()
        self.disk_bytes = used_bytes(db)
        if self.archive.bytes and self.disk_bytes >= QUOTA_LOW * self.quota_bytes:
            # The backlog has priority over the archive: give back what the quota needs.
            # Down to 70 % of the quota, so the "ok" state (below 80 %) is reached for sure.
            target = int(ARCHIVE_YIELD * self.quota_bytes)
            self.archive.prune_chunked(db, lambda: used_bytes(db) - target, self.state.checkpoint)
            self.disk_bytes = used_bytes(db)
        self.state.evaluate_space()
        used = self.disk_bytes / self.quota_bytes
        state = self.quota_state
        if used >= 1.0:
            state = Pressure.FULL
        elif used >= QUOTA_HIGH:
            state = Pressure.HIGH if self.quota_state != Pressure.FULL else self.quota_state
        elif used < QUOTA_LOW:
            state = Pressure.OK
        elif self.quota_state == Pressure.FULL:
            state = Pressure.HIGH
        if state != self.quota_state:
            self.quota_state = state
            callback = self.on_quota_change
            if callback is not None and self.state.loop is not None:
                self.state.loop.call_soon_threadsafe(callback, state, self.disk_bytes)


def _first_unsent(db: sqlite3.Connection, after: int) -> int | None:
    """The oldest envelope after `after` not yet PUBACKed, None when there is none."""
    row = db.execute(
        f"SELECT seq FROM envelopes e WHERE seq > ? AND {_UNSENT} ORDER BY seq LIMIT 1",  # noqa: S608 - a fixed fragment
        (after,),
    ).fetchone()
    return None if row is None else int(row[0])


_COLUMNS = "e.seq, e.topic, e.body, e.payload, e.sig, e.signer"
"""An envelope row as `_rebuild` reads it."""


def _rebuild(row: tuple[Any, ...], protected_by_id: dict[int, str]) -> bytes:
    """The published bytes of an envelope row (`_COLUMNS`): stored whole, or compact."""
    body = bytes(row[2])
    if body or row[3] is None:
        return body  # a row of an older version: the signed bytes themselves
    return published_bytes(protected_by_id[int(row[5])], bytes(row[3]), bytes(row[4]))


def stored_envelopes(
    db: sqlite3.Connection, stream: str | None = None
) -> list[tuple[int, str, bytes]]:
    """(seq, stream, published bytes) of every envelope stored, in seq order.

    For tools and tests that read an outbox database from outside the agent.
    """
    where, params = ("WHERE stream = ?", (stream,)) if stream is not None else ("", ())
    has_compact = has_column(db, "envelopes", "payload")
    columns = _COLUMNS if has_compact else "e.seq, e.topic, e.body, NULL, NULL, NULL"
    protected = signers(db) if has_table(db, "signers") else {}
    rows = db.execute(
        f"SELECT {columns}, e.stream FROM envelopes e {where} ORDER BY seq",  # noqa: S608 - fixed fragments
        params,
    ).fetchall()
    return [(int(r[0]), str(r[6]), _rebuild(r, protected)) for r in rows]


def _stats(db: sqlite3.Connection, acked: list[int] | None = None) -> OutboxStats:
    has_sent = has_table(db, "sent")
    count, items, oldest = db.execute(
        "SELECT COUNT(*), COALESCE(SUM(n_items), 0), MIN(created) FROM envelopes e"  # noqa: S608 - a fixed fragment
        f" WHERE {_UNSENT}"
        if has_sent  # an outbox of an older version, read by `outbox status`
        else "SELECT COUNT(*), COALESCE(SUM(n_items), 0), MIN(created) FROM envelopes"
    ).fetchone()
    if acked and has_sent:
        seqs = sorted(set(acked))
        gone, gone_items = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(n_items), 0) FROM envelopes e"  # noqa: S608 - a fixed fragment
            " WHERE seq IN (SELECT value FROM json_each(?))"
            f" AND {_UNSENT}",
            (json.dumps(seqs),),
        ).fetchone()
        count, items = int(count) - int(gone), int(items) - int(gone_items)
        if count == 0:
            oldest = None
    pending = int(db.execute("SELECT COALESCE(SUM(n_items), 0) FROM batches").fetchone()[0])
    chain = db.execute(
        "SELECT MAX(COALESCE((SELECT last_seq FROM chain WHERE k = 1), 0),"
        " COALESCE((SELECT MAX(seq) FROM envelopes), 0))"
    ).fetchone()
    oldest_text = (
        rfc3339(datetime.fromtimestamp(float(oldest), UTC)) if oldest is not None else None
    )
    return OutboxStats(
        envelopes=int(count),
        items=int(items),
        pending_items=pending,
        oldest_unsent=oldest_text,
        disk_bytes=used_bytes(db),
        last_seq=int(chain[0]) if chain else 0,
    )


def read_stats(path: Path) -> OutboxStats:
    """Stats of an outbox database on disk (safe while the agent runs: WAL readers)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no outbox database (has the agent run yet?)")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return _stats(db)
    finally:
        db.close()
