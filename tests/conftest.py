"""Suite-wide fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import asyncio
import itertools
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from broker import Mosquitto

from central.pgserver import PostgresServer


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow scenarios first (otherwise in file order); tests of an `xdist_group` on one worker.

    `make test` runs the suite on several xdist workers that each take the next test when
    one ends: started first, the long scenarios run side by side while the short tests fill
    the gaps, rather than one of them starting last and the whole run waiting for it. Every
    worker sorts the same collection the same way, as xdist requires.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    if getattr(config.option, "loadgroup", False):
        for item in items:
            _join_xdist_group(item)


def _join_xdist_group(item: pytest.Item) -> None:
    """Suffix a grouped test's node id with `@group`, which `--dist loadgroup` schedules by.

    pytest-xdist does this itself by setting `item._nodeid`, which pytest 9 no longer reads
    (the id is `item._id`): the groups were silently ignored and a shared fixture was built on
    every worker that drew one of its tests. Done here for either pytest.
    """
    groups = sorted({
        str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
        for mark in item.iter_markers("xdist_group")
    })
    if not groups or "@" in item.nodeid.rpartition("]")[2]:
        return
    nodeid = f"{item.nodeid}@{'_'.join(groups)}"
    if hasattr(item, "_id"):  # pytest >= 9: a structured NodeId
        from _pytest.nodeid import NodeId  # only in pytest >= 9

        item._id = NodeId.parse(nodeid)
    else:
        item._nodeid = nodeid


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real mosquitto on a free loopback port, stopped after the test."""
    broker = Mosquitto(tmp_path, persistent=True)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


# Threads that are not a test's to stop: the event loop's default executor (closed with the
# loop, after the fixtures) and pytest-timeout's watchdog.
_NOT_OWNED_BY_A_TEST = ("asyncio_", "pytest_timeout")
LEAK_GRACE_S = 5.0


@pytest.fixture(autouse=True)
async def no_leaked_tasks_or_threads(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Fail a test that leaves tasks running or threads alive after its fixtures cleaned up.

    Every task has an owner that stops it, and every thread is joined: a library that leaks
    (pymodbus did) is found here, not by a later test that inherits its traffic.
    """
    before = set(threading.enumerate())
    yield
    this = asyncio.current_task()
    deadline = time.monotonic() + LEAK_GRACE_S
    while True:
        tasks = [t for t in asyncio.all_tasks() if t is not this and not t.done()]
        threads = [
            t for t in threading.enumerate()
            if t not in before and t.is_alive() and not t.name.startswith(_NOT_OWNED_BY_A_TEST)
        ]
        if not (tasks or threads) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    if tasks or threads:
        for task in tasks:
            task.cancel()
        names = [t.get_name() + ": " + repr(t.get_coro()) for t in tasks]
        pytest.fail(
            f"{request.node.nodeid} leaked {len(tasks)} task(s) {names} and "
            f"{len(threads)} thread(s) {[t.name for t in threads]}",
            pytrace=False,
        )


class PgDatabase:
    """One database of a per-worker cluster: what a test sees as `postgres`.

    `url` names it (trust authentication on loopback, as the cluster's own `url`); databases
    made with `new_database()` (a stand-in replica, say) are dropped with it.
    """

    def __init__(self, cluster: PostgresServer, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.port = cluster.port
        self._made = [name]
        _admin(cluster, f'CREATE DATABASE "{name}"')

    @property
    def url(self) -> str:
        return _database_url(self.cluster, self.name)

    def new_database(self, suffix: str) -> str:
        """Create another database on the same server; returns its URL."""
        name = f"{self.name}_{suffix}"
        _admin(self.cluster, f'CREATE DATABASE "{name}"')
        self._made.append(name)
        return _database_url(self.cluster, name)

    def drop(self) -> None:
        """Drop every database of this test (closing what the test left connected)."""
        for name in reversed(self._made):
            _admin(self.cluster, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _database_url(cluster: PostgresServer, name: str) -> str:
    return cluster.url.rsplit("/", 1)[0] + "/" + name


def _admin(cluster: PostgresServer, sql: str) -> None:
    with psycopg.connect(_database_url(cluster, "postgres"), autocommit=True,
                         connect_timeout=10) as conn:
        conn.execute(sql.encode())


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresServer]:
    """One real PostgreSQL per xdist worker (Debian binaries, initdb in a temp dir, an
    unprivileged user, a free loopback port), started on first use and destroyed when the
    worker ends. Tests get a database of their own on it (`postgres`); tests that stop or kill
    the server take `private_postgres`. Without fsync: nothing here tests PostgreSQL's own
    durability, and tests that stop the server use a private one."""
    server = PostgresServer(fsync=False)
    server.start()
    try:
        yield server
    finally:
        server.destroy()


_DATABASE_NUMBERS = itertools.count(1)


@pytest.fixture
def postgres(postgres_cluster: PostgresServer) -> Iterator[PgDatabase]:
    """A fresh, empty database for this test on the worker's cluster, dropped after it."""
    database = PgDatabase(postgres_cluster, f"t{os.getpid()}_{next(_DATABASE_NUMBERS)}")
    try:
        yield database
    finally:
        database.drop()


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of this test's own, for tests that stop, restart or kill the
    server; destroyed after the test."""
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.destroy()
