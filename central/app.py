"""`isoedge ingest run` and `isoedge ingest report`: the ingest process and its report."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

import psycopg
import structlog

from agent.delivery.signing import Signer
from central.completeness import report
from central.config import IngestConfig
from central.consumer import BrokerIncompatibleError, Consumer
from central.envelope import KeyRegistry
from central.repair import Repairer
from central.schema import ensure_partitions, migrate
from central.shipments import reconcile
from central.store import connect

log = structlog.get_logger("isoedge.central")

MIGRATE_TIMEOUT_S = 120.0
PARTITIONS_EVERY_S = 3600.0  # the daily partitions of the days ahead, checked hourly


def prepare_database(config: IngestConfig, timeout: float = MIGRATE_TIMEOUT_S) -> int:
    """Create or migrate the schema, retrying while the server is not reachable yet."""
    import time  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while True:
        try:
            with connect(config.database.url, application_name="isoedge-ingest-migrate") as conn:
                return migrate(conn, timescaledb=config.database.timescaledb)
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("database not reachable; retrying", error=str(exc).strip()[:200])
            time.sleep(1.0)


def ingest_report(config: IngestConfig, registry: KeyRegistry) -> dict[str, Any]:
    """The JSON of `isoedge ingest report --json` (docs/contract.md §6)."""
    with connect(config.database.url, application_name="isoedge-ingest-report") as conn:
        migrate(conn, timescaledb=config.database.timescaledb)
        return {"agents": [a.as_json() for a in report(conn, registry.agents)]}


def rebuild_completeness(config: IngestConfig, *, write: bool) -> list[str]:
    """`isoedge ingest rebuild-completeness`: recompute from the record; the differences."""
    from central.completeness import rebuild  # noqa: PLC0415 - only this verb needs it

    with connect(config.database.url, application_name="isoedge-ingest-rebuild",
                 statement_timeout_ms=0) as conn:
        migrate(conn, timescaledb=config.database.timescaledb)
        return rebuild(conn, write=write)


class Ingest:
    """One ingest process: consumer threads, the repair cycle and (optionally) the fleet page."""

    def __init__(self, config: IngestConfig, registry: KeyRegistry, *,
                 signer: Signer | None = None) -> None:
        self.config = config
        self.registry = registry
        self.consumer = Consumer(config, registry)
        self.repairer = Repairer(config, self.consumer.publish, signer=signer)
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        """Ask `run` to return (signal handlers call this)."""
        self._stop.set()

    def _ensure_partitions(self) -> None:
        with connect(self.config.database.url, application_name="isoedge-ingest-partitions") as c:
            created = ensure_partitions(c)
        if created:
            log.info("partitions created ahead", partitions=created)

    def _reconcile_shipments(self) -> None:
        section = self.config.shipments
        with connect(self.config.database.url, application_name="isoedge-ingest-shipments") as c:
            counts = reconcile(c, tolerance_pct=section.tolerance_pct, grace_s=section.grace_s)
        if any(state not in {"awaiting", "within"} for state in counts):
            log.info("shipments reconciled", **counts)

    async def _repair_loop(self) -> None:
        interval = self.config.repair.check_interval_s
        partitions_due = 0.0
        while True:
            if asyncio.get_running_loop().time() >= partitions_due:
                try:
                    await asyncio.to_thread(self._ensure_partitions)
                    partitions_due = asyncio.get_running_loop().time() + PARTITIONS_EVERY_S
                except psycopg.Error as exc:
                    log.warning("creating partitions ahead failed", error=str(exc).strip()[:200])
            failed = self.consumer.failed
            if isinstance(failed, BrokerIncompatibleError):
                raise failed
            if failed is not None:
                raise RuntimeError(f"the consumer failed: {failed!r}")
            try:
                await asyncio.to_thread(self.repairer.cycle)
            except psycopg.Error as exc:
                log.warning("completeness check failed", error=str(exc).strip()[:200])
            try:
                await asyncio.to_thread(self._reconcile_shipments)
            except psycopg.Error as exc:
                log.warning("shipment reconciliation failed", error=str(exc).strip()[:200])
            await asyncio.sleep(interval)

    async def run(self) -> None:
        """Until `request_stop`: consume, store, check completeness, serve the fleet page."""
        await asyncio.to_thread(prepare_database, self.config)
        self.consumer.start()
        runner = None
        if self.config.web.enabled:
            from central.fleet import start_fleet_page  # noqa: PLC0415 - aiohttp only when asked

            runner = await start_fleet_page(self.config, self.registry, self.consumer)
        try:
            async with asyncio.TaskGroup() as group:
                repair = group.create_task(self._repair_loop(), name="ingest-repair")
                await self._stop.wait()
                repair.cancel()
        except* BrokerIncompatibleError as group:
            # One clear line (`ingest failed: …`, exit 1), not a task group's traceback.
            raise RuntimeError(str(group.exceptions[0])) from None
        finally:
            if runner is not None:
                await runner.cleanup()
            await asyncio.to_thread(self.consumer.stop)
            await asyncio.to_thread(self.repairer.close)
            log.info("ingest stopped", **{
                k: getattr(self.consumer.stats, k)
                for k in ("received", "new_envelopes", "readings", "rejected", "acked")
            })


async def run_until_signalled(ingest: Ingest) -> None:
    """Run until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, ingest.request_stop)
    await ingest.run()
