"""The worker watching itself: consumer lag per partition, table sizes and drift, as gauges.

A timer refreshes them every few seconds from what Faust already tracks (its monitor's
end and committed offsets per partition), from the table stores and from the drift
windows the scoring stage fills (`DriftWatch`), so scraping /metrics costs nothing and the
hot path only adds bin counts. Any failure here is logged, never fatal.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

import faust
from faust.types import TP
from prometheus_client import Gauge

from models.drift import Window, reference_of
from models.scoring import Scored, Scorer
from streams import metrics
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


class DriftWatch:
    """Per model version served, a sliding window of its scores and watched features
    (models/drift.py) and the PSI gauges computed from it.

    `observe` runs in the scoring stage and only counts a batch into bins; `refresh` runs
    on the monitoring timer and computes PSI from the counts. A model whose artifact has no
    drift reference (trained before it was stored) is served without drift gauges.
    """

    def __init__(self, window_s: float, min_count: int) -> None:
        self.window_s = window_s
        self.min_count = min_count
        self.windows: dict[str, Window | None] = {}
        self.shown: dict[str, set[tuple[str, str]]] = {}

    def _window(self, scorer: Scorer) -> Window | None:
        version = scorer.version
        if version not in self.windows:
            try:
                ref = reference_of(scorer.artifact.meta)
            except (KeyError, TypeError, ValueError) as exc:
                log.error("model %s: drift reference unreadable, no drift gauges: %s", version, exc)
                ref = None
            else:
                if ref is None:
                    log.warning("model %s has no drift reference: no drift gauges", version)
            self.windows[version] = None if ref is None else Window(ref, self.window_s)
        return self.windows[version]

    def observe(self, scorer: Scorer, scored: Sequence[Scored], now: float) -> None:
        window = self._window(scorer)
        if window is not None:
            for batch in scored:
                window.add(batch.scores, batch.features, now)

    def refresh(self, serving: Iterable[str], now: float) -> None:
        """Set the gauges of the versions served; forget the others' windows and series."""
        serving = set(serving)
        for version in set(self.windows) - serving:
            del self.windows[version]
        for version in set(self.shown) - serving:
            self._remove(version, self.shown.pop(version))
        for version, window in self.windows.items():
            if window is None:
                continue
            values = window.psi(now, self.min_count)
            metrics.DRIFT_WINDOW.labels(version).set(window.count(now))
            self._remove(version, self.shown.get(version, set()) - set(values))
            for (kind, name), value in values.items():
                gauge = metrics.SCORE_PSI if kind == "score" else metrics.FEATURE_PSI
                gauge.labels(name, version).set(value)
            self.shown[version] = set(values)

    @staticmethod
    def _remove(version: str, keys: Iterable[tuple[str, str]]) -> None:
        for kind, name in keys:
            gauge = metrics.SCORE_PSI if kind == "score" else metrics.FEATURE_PSI
            gauge.remove(name, version)


def register(
    app: faust.App,
    tables: Tables,
    drift: DriftWatch,
    serving: Callable[[], Iterable[str]],
    interval_s: float = 5.0,
) -> None:
    """The monitoring timer; `serving()` names the model versions the worker serves."""
    gauges = Gauges()

    @app.timer(interval=interval_s)
    async def observe() -> None:
        try:
            monitor = app.monitor
            assigned = app.consumer.assignment()
            lags = lag(assigned, monitor.tp_end_offsets, monitor.tp_committed_offsets)
            sizes = {
                t.name: table_keys(t)
                for t in (tables.bills, tables.consignees, tables.shippers, tables.filers)
            }
            gauges.update(lags, sizes, owned(assigned))
        except Exception:
            log.exception("lag and table-size gauges not refreshed; will retry")
        try:
            drift.refresh(serving(), time.time())
        except Exception:
            log.exception("drift gauges not refreshed; will retry")
