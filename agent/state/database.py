"""The state database's owner thread: one SQLite connection, one thread, a queue to it.

Every read and write of the state database runs on this thread, never on the event loop, so
a slow disk never stalls device I/O. The event loop talks to it three ways:

- `call(fn)` / `run(fn(db))`: a job run on the thread, its result awaited (reads, schema set-up);
- `transact(apply, items)`: a write run inside the thread's next commit, together with the
  stream items that belong with it (a change and its audit record are one transaction); its
  future resolves after the commit, or with the reason nothing of it was kept;
- the thread's death (`failed`, `failure`): every job and write still waiting is answered
  with the error instead of never.

What a commit holds besides the writes, and when it is due, is its host's (`StateHost`: the
outbox, with acquired readings, envelopes, acknowledgements). The database keeps what is the
same for any content: the damaged-file check at start, a full disk (a failed commit is rolled
back and its writes retried, free space measured, the reserve file released), the WAL's
checkpoints. `StateWriter` (agent/state/writer.py) is what QC, alerts, audit and
prescriptions see of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import structlog

from agent.state.damage import DamagedDatabaseError, DamageReport, check_database, move_aside
from agent.state.diskspace import DiskSpacePolicy, SpaceState, is_disk_full
from agent.state.pressure import Pressure
from agent.state.schema import SCHEMA, WAL_AUTOCHECKPOINT, connect
from agent.state.writer import Apply

log = structlog.get_logger("isoedge.state")

T = TypeVar("T")

SPACE_CHECK_S = 1.0  # free space measured (and failed writes retried) at least this often
RESERVE_CHECK_S = 10.0  # the reserve file rewritten (when missing and there is room) this often


class StateDatabaseError(RuntimeError):
    """The state database cannot answer (its owner thread has failed or is not running)."""


@dataclass(slots=True)
class Write:
    """A transactional write: its SQL and the stream items committed together with it."""

    apply: Apply | None
    items: list[tuple[str, str, str]]
    tag: str
    done: Future[Any]


class StateHost(Protocol):
    """What the state database's commits hold besides its writes, and when they are due.

    Every method runs on the owner thread. The outbox (agent/delivery/outbox.py) is the host:
    acquired readings, envelopes, acknowledgements.
    """

    def load(self, db: sqlite3.Connection) -> None:
        """The database was opened (schema created): migrate and load the host's state."""
        ...

    def loaded(self, db: sqlite3.Connection, damage: DamageReport | None) -> None:
        """Loading is done (before `start` returns): e.g. continue after a damaged file."""
        ...

    def started(self) -> None:
        """`start` has returned (e.g. log what was found)."""
        ...

    def woken(self) -> None:
        """The owner thread woke up (before it decides whether a commit is due)."""
        ...

    def commit_due(self) -> bool:
        """Whether the host's own work makes a commit due now."""
        ...

    def deadline(self) -> float | None:
        """Seconds until the host's next commit is due (None: nothing waits for one)."""
        ...

    def idle(self) -> bool:
        """Nothing of the host's waits to be retried after a full disk."""
        ...

    def commit_cycle(self, writes: list[Write], *, force: bool) -> None:
        """One transaction: `apply_writes(writes)`, the host's own rows, commit.

        Raise the disk-full `sqlite3.Error` after keeping the host's own work for a retry.
        """
        ...

    def cycle_done(self) -> None:
        """After a cycle that was stored."""
        ...

    def rolled_back(self, db: sqlite3.Connection) -> None:
        """A failed transaction was rolled back: forget what it changed in memory."""
        ...

    def relieve(self) -> None:
        """Under disk pressure, before a commit or a measurement: free what can be freed."""
        ...

    def yield_space(self) -> None:
        """Under disk pressure, after a measurement: give up what may be given up."""
        ...

    def stopped(self, stored: bool) -> None:
        """The last cycle ran (`stored`: it was committed); the connection closes next."""
        ...

    def on_failure(self) -> None:
        """The owner thread died: wake whoever waits on the host's own events."""
        ...


class StateDatabase:
    """One SQLite connection owned by one thread; jobs and writes reach it through a queue.

    Its host (`attach`) says what a commit holds besides the writes and when it is due; the
    database keeps the thread, the damaged-file check, the disk-full retry and free space.
    """

    thread_name = "isoedge-state"

    def __init__(
        self,
        path: Path,
        *,
        fsync: str = "full",
        min_free_bytes: int = 0,
        reserve_file_bytes: int = 0,
        on_damaged: str = "refuse",
    ) -> None:
        self.path = path
        self.fsync = fsync
        # The host's check of a write's stream items, (stream, device, json, tag) -> the error
        # that refuses the whole write, or None (the outbox refuses what no envelope carries).
        self.item_guard: Callable[[str, str, str, str], BaseException | None] | None = None
        self.host: StateHost | None = None
        # Writes go through a plain list (swapped whole by the owner thread); jobs and the
        # stop marker through a queue. `_wake` tells the owner thread there is work.
        self._writes: list[Write] = []
        self._inbox: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._db: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fatal: BaseException | None = None
        self._jobs_taken: list[Callable[[], None]] = []
        self.failed = asyncio.Event()
        """Set (on the event loop) when the owner thread has died: see `failure`."""
        # Disk full (issue 14): a cycle that fails for lack of space is rolled back and its
        # writes kept here, in order, for the next attempt (the host keeps its own).
        self.space = DiskSpacePolicy(
            path.parent, min_free_bytes=min_free_bytes, reserve_file_bytes=reserve_file_bytes
        )
        self.disk_state = Pressure.OK
        self.on_disk_change: Callable[[SpaceState], None] | None = None
        self.disk_full_total = 0  # cycles or acknowledgements that failed for lack of space
        self._retry_writes: list[Write] = []
        self._space_checked = 0.0
        self._reserve_checked = 0.0
        self._wal_checked = 0.0
        self._wal_excess = 0
        self.on_damaged = on_damaged
        self.damage: DamageReport | None = None

    def attach(self, host: StateHost) -> None:
        """The host whose rows the commits hold (before `start`)."""
        self.host = host

    def _host(self) -> StateHost:
        if self.host is None:
            raise StateDatabaseError("state database has no host attached")
        return self.host

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Open (or create) the database and start the owner thread."""
        self._loop = asyncio.get_running_loop()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ready: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=self.thread_name, daemon=True
        )
        self._thread.start()
        await asyncio.wrap_future(ready)

    async def close(self) -> None:
        """Let the owner thread finish its work (a last commit), then close the database."""
        if self._thread is None:
            return
        self._inbox.put(None)
        self._wake.set()
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    @property
    def failure(self) -> BaseException | None:
        """Why the owner thread died, if it did."""
        return self._fatal

    @property
    def alive(self) -> bool:
        """False once the owner thread has died (disk full, database corrupt ...)."""
        return self._thread is not None and self._thread.is_alive() and self._fatal is None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop that started the database (callbacks are scheduled on it)."""
        return self._loop

    def wake(self) -> None:
        """Tell the owner thread there is work (thread-safe, cheap when already told)."""
        if not self._wake.is_set():
            self._wake.set()

    def enqueue(self, job: Callable[[], None]) -> None:
        """Run `job` on the owner thread (it answers its own future)."""
        self._inbox.put(job)
        self._wake.set()

    def connection(self) -> sqlite3.Connection:
        """The connection, on the owner thread only; raises once the thread has failed."""
        return self._db_checked()

    # ------------------------------------------------------------------ writes
    def transact(
        self,
        apply: Apply | None,
        items: list[tuple[str, str, str]] | None = None,
        *,
        tag: str = "",
    ) -> Future[Any]:
        """Queue a write of the state database and the stream items that belong with it.

        `apply(db)` runs on the owner thread inside the next commit, and the
        `(stream, device, item_json)` items are stored in that same transaction: either all
        of it is committed or none (an alert acknowledgement, its audit record and their
        stream events). The returned future resolves with `apply`'s result after the commit,
        or with its exception (then nothing of this write is kept). Thread-safe, never blocks.
        """
        write = Write(apply, list(items or ()), tag, Future())
        if self.item_guard is not None:
            for stream, device, text in write.items:
                if (refused := self.item_guard(stream, device, text, tag)) is not None:
                    write.done.set_exception(refused)
                    return write.done
        if not self.alive and self._thread is not None:
            write.done.set_exception(self._not_running())
            return write.done
        self._writes.append(write)
        if not self._wake.is_set():
            self._wake.set()
        if self._fatal is not None and not write.done.done():
            write.done.set_exception(self._not_running())
        return write.done

    async def transact_async(
        self, apply: Apply | None, items: list[tuple[str, str, str]] | None = None, *,
        tag: str = "",
    ) -> Any:
        """`transact()`, awaited until committed."""
        return await asyncio.wrap_future(self.transact(apply, items, tag=tag))

    @staticmethod
    def apply_writes(db: sqlite3.Connection, writes: list[Write]) -> list[tuple[Write, Any]]:
        """Run each write in a savepoint; a failing one is undone alone and told why.

        A full disk is not a write's own failure: it is raised, so the caller rolls the whole
        commit back and retries every write of it later.
        """
        applied: list[tuple[Write, Any]] = []
        if not writes:
            return applied
        if not db.in_transaction:
            db.execute("BEGIN")
        for write in writes:
            if write.apply is None:
                applied.append((write, None))
                continue
            db.execute("SAVEPOINT state_write")
            try:
                result = write.apply(db)
            except Exception as exc:
                if is_disk_full(exc):
                    raise  # the whole cycle is rolled back and retried, this write with it
                db.execute("ROLLBACK TO state_write")
                db.execute("RELEASE state_write")
                write.done.set_exception(exc)
                continue
            db.execute("RELEASE state_write")
            applied.append((write, result))
        return applied

    # -------------------------------------------------------------------- jobs
    async def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the owner thread (it may use `connection()`) and return its result."""
        if not self.alive:
            raise self._not_running()
        result: Future[T] = Future()

        def _job() -> None:
            # The awaiting coroutine may have been cancelled (e.g. a lost broker connection);
            # then nobody wants the result and the job is skipped.
            if not result.set_running_or_notify_cancel():
                return
            try:
                result.set_result(fn())
            except Exception as exc:  # handed to the awaiting coroutine
                result.set_exception(exc)

        self._inbox.put(_job)
        self._wake.set()
        if self._fatal is not None:
            # The thread died after the check above: it will not answer; the job fails now.
            self._fail_waiting_jobs()
        return await asyncio.wrap_future(result)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(db)` on the owner thread: reads and schema set-up of the state database."""
        return await self.call(lambda: fn(self._db_checked()))

    # ------------------------------------------------------- commits (owner thread)
    def cycle(self, *, force: bool = False) -> bool:
        """A commit cycle that survives a full disk: rolled back, its work kept for later.

        False when the disk was full (the writes and the host's work wait for the next try).
        """
        host = self._host()
        writes, self._writes = self._writes, []
        if self._retry_writes:
            writes, self._retry_writes = self._retry_writes + writes, []
        if self.disk_state != Pressure.OK or self.space.current.write_failed:
            # Under disk pressure the host frees first, in a transaction of its own (the
            # outbox's acknowledgements: their deletions make the room this cycle may need).
            host.relieve()
        try:
            host.commit_cycle(writes, force=force)
        except BaseException as exc:
            if not is_disk_full(exc):
                for write in writes:
                    if not write.done.done():
                        write.done.set_exception(
                            StateDatabaseError(f"state database write failed: {exc!r}")
                        )
                raise
            self.write_failed(exc)
            self._retry_writes = [w for w in writes if not w.done.done()] + self._retry_writes
            return False
        if self.space.current.write_failed:
            log.warning("state database writes succeed again", writes=len(writes))
            self.evaluate_space(write_failed=False)
        host.cycle_done()
        return True

    def write_failed(self, exc: BaseException) -> None:
        """Roll back, forget what the failed transaction changed in memory, free what we can."""
        db = self._db_checked()
        with contextlib.suppress(sqlite3.Error):
            db.rollback()
        self._host().rolled_back(db)
        self.disk_full_total += 1
        if not self.space.current.write_failed:
            log.error("disk full: state database write failed; acquisition pauses, writes are"
                      " retried", path=str(self.path), error=str(exc))
        released = self.space.release_reserve()
        self.checkpoint()
        self.evaluate_space(write_failed=not released)

    def evaluate_space(self, *, write_failed: bool | None = None) -> None:
        """Measure free space and tell the event loop when the disk state changed."""
        self._space_checked = time.monotonic()
        db = self._db_checked()
        try:
            page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
            free_pages = int(db.execute("PRAGMA freelist_count").fetchone()[0])
        except sqlite3.Error:
            free_pages, page_size = 0, 0
        before = self.disk_state
        if before != Pressure.OK and time.monotonic() - self._wal_checked >= SPACE_CHECK_S:
            self._wal_excess = self._wal_excess_bytes()
        elif before == Pressure.OK:
            self._wal_excess = 0
        current = self.space.evaluate(free_pages * page_size + self._wal_excess,
                                      write_failed=write_failed)
        if current.state != before:
            self.disk_state = current.state
            snapshot = SpaceState(**{k: getattr(current, k) for k in current.__slots__})
            callback = self.on_disk_change
            if callback is not None and self._loop is not None:
                self._loop.call_soon_threadsafe(callback, snapshot)

    def checkpoint(self) -> None:
        """Copy the WAL into the database, so the next write starts the WAL over.

        Not TRUNCATE: a WAL file that keeps its size is room the next transactions can use
        on a disk with no free space at all.
        """
        with contextlib.suppress(sqlite3.Error):
            self._db_checked().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _wal_excess_bytes(self) -> int:
        """Under disk pressure: checkpoint, and count the WAL beyond its steady size as room.

        A WAL of up to WAL_AUTOCHECKPOINT pages is the database's working space: what the next
        transactions write into it reaches the database file at the next checkpoint, so it is
        not room (counting it let free space fall below the reserve by its size). What a long
        transaction (deleting a drained backlog) grew it by, once all of it is copied, is: it
        is written again from its start. Run at most once per SPACE_CHECK_S.
        """
        self._wal_checked = time.monotonic()
        db = self._db_checked()
        try:
            busy, log_frames, done = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
        except sqlite3.Error:
            return 0
        if int(busy) != 0 or int(log_frames) != int(done):
            return 0
        steady = 32 + WAL_AUTOCHECKPOINT * (page_size + 24)  # WAL header, frames
        try:
            size = self.path.with_name(self.path.name + "-wal").stat().st_size
        except OSError:
            return 0
        return max(0, size - steady)

    def _periodic_space_check(self) -> None:
        now = time.monotonic()
        if now - self._space_checked >= SPACE_CHECK_S:
            if self.disk_state != Pressure.OK:
                self._host().relieve()  # otherwise it rides with a commit
            self.evaluate_space()
            if self.disk_state != Pressure.OK:
                self._host().yield_space()
        if self.disk_state == Pressure.OK and now - self._reserve_checked >= RESERVE_CHECK_S:
            self._reserve_checked = now
            self.space.ensure_reserve()

    def _wait_timeout(self) -> float | None:
        host = self._host()
        deadline = host.deadline()
        idle = not self._retry_writes and host.idle()
        if self.disk_state == Pressure.OK and idle:
            return deadline
        # Under disk pressure: measure and retry at least every SPACE_CHECK_S.
        return SPACE_CHECK_S if deadline is None else min(deadline, SPACE_CHECK_S)

    # ------------------------------------------------------------ owner thread
    def _db_checked(self) -> sqlite3.Connection:
        if self._db is None or self._fatal is not None:
            raise StateDatabaseError(f"state database is not usable: {self._fatal!r}")
        return self._db

    def _not_running(self) -> StateDatabaseError:
        return StateDatabaseError(f"state database is not running: {self._fatal!r}")

    def _check_damage(self) -> None:
        """Refuse, or move aside, a damaged database before anything writes to it."""
        reason = check_database(self.path)
        if reason is None:
            return
        if self.on_damaged != "move_aside":
            raise DamagedDatabaseError(self.path, reason)
        self.damage = move_aside(self.path, reason)

    def _open(self) -> sqlite3.Connection:
        db = connect(self.path, fsync=self.fsync)
        try:
            db.executescript(SCHEMA)
            self._db = db
            self._host().load(db)
        except BaseException:
            self._db = None
            db.close()
            raise
        return db

    def _open_retrying(self) -> sqlite3.Connection:
        """Open; on a disk too full even for the WAL, give up the reserve and keep trying."""
        warned = False
        while True:
            try:
                return self._open()
            except sqlite3.Error as exc:
                if not is_disk_full(exc) and "unable to open" not in str(exc):
                    raise
                if self.space.release_reserve():
                    continue
                if not warned:
                    log.critical("disk full: cannot open the state database; retrying",
                                 path=str(self.path), error=str(exc))
                    warned = True
                time.sleep(SPACE_CHECK_S)

    def _open_database(self) -> sqlite3.Connection:
        """Open (and migrate) the database on the owner thread; raise to fail `start`."""
        self.space.release_if_low()
        self._check_damage()
        db = self._db = self._open_retrying()
        self._host().loaded(db, self.damage)
        return db

    def _serve(self) -> None:
        """The owner thread's work until the stop marker, then a last commit."""
        host = self._host()
        stopping = False
        while not stopping:
            self._wake.wait(self._wait_timeout())
            self._wake.clear()
            host.woken()
            jobs, stopping = self._take_jobs()
            self._jobs_taken = jobs  # answered with the error if the cycle below fails
            # Jobs were taken first, so every write queued before a job (a read after a
            # write) is committed in this cycle, before the job runs.
            if stopping or self._writes or self._retry_writes or host.commit_due():
                self.cycle(force=stopping)
            for job in jobs:
                job()
            self._periodic_space_check()
        stored = self.cycle(force=True)
        host.stopped(stored)
        if not stored:
            for write in self._retry_writes:
                if not write.done.done():
                    write.done.set_exception(StateDatabaseError("disk full at shutdown"))

    def _run(self, ready: Future[None]) -> None:
        try:
            self._db = self._open_database()
        except BaseException as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        self._host().started()
        try:
            self._serve()
        except BaseException as exc:
            self._fatal = exc
            log.exception("state database thread failed", path=str(self.path))
            self._fail_waiting_jobs()
            for write in self._writes:
                if not write.done.done():
                    write.done.set_exception(self._not_running())
            self._host().on_failure()
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self.failed.set)
        finally:
            self._db.close()
            self._db = None

    def _take_jobs(self) -> tuple[list[Callable[[], None]], bool]:
        """The jobs queued so far, and whether the stop marker was among them."""
        jobs: list[Callable[[], None]] = []
        stopping = False
        while True:
            try:
                job = self._inbox.get_nowait()
            except queue.Empty:
                return jobs, stopping
            if job is None:
                stopping = True
            else:
                jobs.append(job)

    def _fail_waiting_jobs(self) -> None:
        """Jobs queued behind a fatal error are answered with it instead of never."""
        taken, self._jobs_taken = self._jobs_taken, []
        for job in taken:
            with contextlib.suppress(Exception):
                job()  # each job checks `self._db`, which raises StateDatabaseError now
        while True:
            try:
                entry = self._inbox.get_nowait()
            except queue.Empty:
                return
            if callable(entry):
                try:
                    entry()  # each job checks `self._db`, which raises StateDatabaseError now
                except Exception:  # noqa: S112 - already reported above, once
                    continue


_FAULT = os.environ.get("ISOEDGE_FAULT_KILL_AT", "")
"""Fault injection for crash-consistency tests: `before-commit:TAG` or `after-commit:TAG`
kills the process (SIGKILL) at that point of the first commit holding a write tagged TAG."""


def fault_point(where: str, applied: list[tuple[Write, Any]]) -> None:
    """Kill the process here when the fault injection names this point and a write's tag."""
    if not _FAULT:
        return
    point, _, tag = _FAULT.partition(":")
    if point == where and any(write.tag == tag for write, _ in applied):
        log.warning("fault injection: killing the process", at=where, tag=tag)
        os.kill(os.getpid(), signal.SIGKILL)
