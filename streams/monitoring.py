"""The worker watching itself: consumer lag per partition and table sizes, as gauges.

A timer refreshes them every few seconds from what Faust already tracks (its monitor's
end and committed offsets per partition) and from the table stores, so scraping /metrics
costs nothing and the hot path is untouched. Any failure here is logged, never fatal.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping

import faust
from faust.types import TP
from prometheus_client import Gauge

from streams.tables import Tables

log = logging.getLogger(__name__)

LAG = Gauge(
    "parcel_risk_consumer_lag_records",
    "Records on a partition this worker owns not yet committed (end minus committed offset)",
    ["topic", "partition"],
)
TABLE_KEYS = Gauge("parcel_risk_table_keys", "Keys held by this worker, per table", ["table"])
ASSIGNED = Gauge(
    "parcel_risk_assigned_partitions",
    "Partitions of each stream topic this worker owns (how the group shares the work)",
    ["topic"],
)


def lag(
    assigned: Iterable[TP], end: Mapping[TP, int], committed: Mapping[TP, int | None]
) -> dict[TP, int]:
    """Lag of each assigned stream partition (changelogs are state, not work, so skipped).

    A partition never committed counts from its start; no known end offset means nothing
    fetched yet, so no figure rather than a guess.
    """
    out = {}
    for tp in assigned:
        if tp.topic.endswith("-changelog") or tp not in end:
            continue
        out[tp] = max(0, end[tp] - (committed.get(tp) or 0))
    return out


def owned(assigned: Iterable[TP]) -> dict[str, int]:
    """Stream partitions owned, per topic (changelogs follow their streams)."""
    return dict(Counter(tp.topic for tp in assigned if not tp.topic.endswith("-changelog")))


def table_keys(table: faust.Table) -> int:
    """Keys in a table's local store: RocksDB's estimate per partition (counting a million
    keys every few seconds would cost more than the work), else the exact count."""
    dbs = getattr(table.data, "_dbs", None)  # faust's RocksDB store: partition -> Rdict
    if dbs is not None:
        return sum(db.property_int_value("rocksdb.estimate-num-keys") or 0 for db in dbs.values())
    return len(table.data)


class Gauges:
    """The gauges of one worker; partitions it no longer owns are removed."""

    def __init__(self) -> None:
        self.shown: set[TP] = set()
        self.topics: set[str] = set()

    def update(
        self, lags: Mapping[TP, int], sizes: Mapping[str, int], partitions: Mapping[str, int]
    ) -> None:
        for tp in self.shown - set(lags):
            LAG.remove(tp.topic, str(tp.partition))
        for tp, n in lags.items():
            LAG.labels(tp.topic, str(tp.partition)).set(n)
        self.shown = set(lags)
        for name, n in sizes.items():
            TABLE_KEYS.labels(name).set(n)
        for topic in self.topics | set(partitions):
            ASSIGNED.labels(topic).set(partitions.get(topic, 0))
        self.topics |= set(partitions)


def register(app: faust.App, tables: Tables, interval_s: float = 5.0) -> None:
    gauges = Gauges()

    @app.timer(interval=interval_s)
    async def observe() -> None:
        try:
            monitor = app.monitor
            assigned = app.consumer.assignment()
            lags = lag(assigned, monitor.tp_end_offsets, monitor.tp_committed_offsets)
            sizes = {
                t.name: table_keys(t) for t in (tables.bills, tables.consignees, tables.shippers)
            }
            gauges.update(lags, sizes, owned(assigned))
        except Exception:
            log.exception("lag and table-size gauges not refreshed; will retry")
