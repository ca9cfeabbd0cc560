"""The state database's owner thread: one SQLite connection, one thread, a queue to it.

Every read and write of the state database runs on this thread, never on the event loop, so
a slow disk never stalls device I/O. The event loop talks to it three ways:

- `call(fn)` / `run(fn(db))`: a job run on the thread, its result awaited (reads, schema set-up);
- `transact(apply, items)`: a write run inside the thread's next commit, together with the
  stream items that belong with it (a change and its audit record are one transaction); its
  future resolves after the commit, or with the reason nothing of it was kept;
- the thread's death (`failed`, `failure`): every job and write still waiting is answered
  with the error instead of never.

What a commit holds besides the writes, and when it is due, is the subclass's (the outbox:
acquired readings, envelopes, acknowledgements). `StateWriter` (agent/state/writer.py) is what
QC, alerts, audit and prescriptions see of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import signal
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog

from agent.state.diskspace import is_disk_full
from agent.state.writer import Apply

log = structlog.get_logger("isoedge.state")

T = TypeVar("T")


class StateDatabaseError(RuntimeError):
    """The state database cannot answer (its owner thread has failed or is not running)."""


@dataclass(slots=True)
class Write:
    """A transactional write: its SQL and the stream items committed together with it."""

    apply: Apply | None
    items: list[tuple[str, str, str]]
    tag: str
    done: Future[Any]


class StateDatabase:
    """One SQLite connection owned by one thread; jobs and writes reach it through a queue.

    Subclasses open the database (`_open_database`) and serve the thread (`_serve`: wait for
    `_wake`, take jobs with `_take_jobs`, commit writes with `apply_writes`).
    """

    thread_name = "isoedge-state"

    def __init__(self, path: Path) -> None:
        self.path = path
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
        """Let the owner thread finish its work (`_serve` returns), then close the database."""
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
        """Run `fn` on the owner thread (it may use `self._db`) and return its result."""
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

    # ------------------------------------------------------------ owner thread
    def _db_checked(self) -> sqlite3.Connection:
        if self._db is None or self._fatal is not None:
            raise StateDatabaseError(f"state database is not usable: {self._fatal!r}")
        return self._db

    def _not_running(self) -> StateDatabaseError:
        return StateDatabaseError(f"state database is not running: {self._fatal!r}")

    def _open_database(self) -> sqlite3.Connection:
        """Open (and migrate) the database on the owner thread; raise to fail `start`."""
        raise NotImplementedError

    def _opened(self) -> None:
        """Called on the owner thread once `start` has returned (e.g. to log what was found)."""

    def _serve(self) -> None:
        """The owner thread's work until the stop marker (`_take_jobs`' second value)."""
        raise NotImplementedError

    def _on_fatal(self) -> None:
        """The owner thread died: wake whoever waits on the subclass's own events."""

    def _run(self, ready: Future[None]) -> None:
        try:
            self._db = self._open_database()
        except BaseException as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        self._opened()
        try:
            self._serve()
        except BaseException as exc:
            self._fatal = exc
            log.exception("state database thread failed", path=str(self.path))
            self._fail_waiting_jobs()
            for write in self._writes:
                if not write.done.done():
                    write.done.set_exception(self._not_running())
            self._on_fatal()
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
