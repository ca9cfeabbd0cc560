"""`/metrics` of the ingest (on the fleet page): its counters in the Prometheus format.

One collector reads the consumer's counters at scrape time. `isoedge_ingest_rejected_total`
is labelled by a fixed rejection code (central/inbound.py CODES), never by a name a message
chose, so a hostile client cannot grow the label set.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from central.inbound import CODES

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from central.consumer import Consumer


class IngestCollector(Collector):
    """The consumer's counters as metric families."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer

    def collect(self) -> Iterator[Metric]:
        """Yield the families (called by prometheus_client at each scrape)."""
        stats = self.consumer.stats
        simple = (
            ("isoedge_ingest_messages_received", "MQTT messages received", stats.received),
            ("isoedge_ingest_envelopes_stored", "Envelopes stored (new)", stats.new_envelopes),
            ("isoedge_ingest_readings_stored", "Readings stored", stats.readings),
            ("isoedge_ingest_messages_acked", "Messages acknowledged after commit", stats.acked),
            ("isoedge_ingest_internal_errors",
             "Messages refused after an internal error of the ingest (each a bug to report)",
             stats.internal_errors),
            ("isoedge_ingest_database_errors", "Failed database writes (retried)",
             stats.db_errors),
        )
        for name, text, value in simple:
            yield CounterMetricFamily(name, text, value=value)
        rejected = CounterMetricFamily("isoedge_ingest_rejected",
                                       "Messages refused as data, by reason code",
                                       labels=["code"])
        by_code = dict(stats.rejected_by_code)
        for code in CODES:
            rejected.add_metric([code], by_code.get(code, 0))
        yield rejected
        yield GaugeMetricFamily("isoedge_ingest_broker_connected", "1 when connected",
                                value=1 if stats.connected else 0)


def render(consumer: Consumer) -> bytes:
    """The exposition text of one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IngestCollector(consumer))
    return generate_latest(registry)
