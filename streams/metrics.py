"""The project's Prometheus metrics, in the default registry beside Faust's own sensors.

Names follow Prometheus conventions (base units, `_total` counters). Label values are
topic names, categories, actions, field names and filer codes (brokers' codes, not personal
data; at most MAX_FILER_SERIES of them, the rest as "other"): never names or addresses.

Two namespaces that cannot meet: the project's metrics start with `parcel_risk_`, Faust's
sensors with `faust_`. Faust would name its sensors after the app id, so the default id
`parcel-risk` turned its `table_operations` into the project's own counter and the worker
crashed at start; a fixed prefix also keeps dashboards the same whatever the app id.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import Any

from faust.sensors.prometheus import FaustMetrics
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, Info

from models.pipeline import Exam
from models.records import CATEGORIES

PREFIX = "parcel_risk_"
FAUST_PREFIX = "faust"

RECORDS = Counter("parcel_risk_records_consumed_total", "Input records consumed", ["topic"])
DECISIONS = Counter("parcel_risk_decisions_total", "Parcels scored (one per record revision)")
REPLAYS_SKIPPED = Counter(
    "parcel_risk_replays_skipped_total",
    "Records replayed after a crash whose stage output was already acknowledged",
    ["stage"],
)
FENCED_BATCHES = Counter(
    "parcel_risk_fenced_batches_total",
    "Exactly-once: batch parts dropped because their partition had moved to another worker",
    ["stage"],
)
HOLDS = Counter("parcel_risk_holds_total", "Flagged parcels published", ["category", "action"])
DEAD_LETTERS = Counter(
    "parcel_risk_dead_letters_total", "Records sent to the dead-letter topic", ["topic", "field"]
)
BATCH_SIZE = Histogram(
    "parcel_risk_batch_size_records",
    "Records per scoring batch",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
)
SCORING_SECONDS = Histogram(
    "parcel_risk_scoring_seconds",
    "Time to score one batch (features, model, reasons)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
STAGE_SECONDS = Histogram(
    "parcel_risk_stage_batch_seconds",
    "A stage's batch: computing its outputs, then settling them (the broker's acknowledgements"
    " or the transaction's commit); a record waits for both in every stage",
    ["stage", "step"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
LATENCY_SECONDS = Histogram(
    "parcel_risk_end_to_end_latency_seconds",
    "From a record's event time to its decision sent",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
STAGE_BACKLOG = Gauge(
    "parcel_risk_stage_backlog_envelopes",
    "Envelopes on this worker's stage partitions not yet committed by their stage",
)
INPUT_HELD = Gauge(
    "parcel_risk_input_held",
    "1 while the input partitions are left out of fetches for the later stages to catch up",
)
INPUT_HOLDS = Counter(
    "parcel_risk_input_holds_total",
    "Times the input partitions were held back for the later stages to catch up",
)
MODEL = Info("parcel_risk_model", "The model version being served")
SHADOW_MODEL = Info(
    "parcel_risk_shadow_model", "The candidate scored beside the serving model (empty: none)"
)
SHADOW_FAILURES = Counter(
    "parcel_risk_shadow_failures_total",
    "Batches the shadow model failed on: decided by the serving model, without the shadow",
)
MODEL_LOADS = Counter("parcel_risk_model_loads_total", "Model load attempts", ["result"])
RULE_RELOADS = Counter("parcel_risk_rule_reloads_total", "Rules file reloads", ["result"])
TABLE_OPERATIONS = Counter(
    "parcel_risk_table_operations_total",
    "Reads and writes of the worker's tables",
    ["table", "operation"],
)
RULE_MATCHES = Counter("parcel_risk_rule_matches_total", "Decisions a rule matched", ["rule"])
RECORD_FAILURES = Counter(
    "parcel_risk_record_failures_total",
    "Valid records whose processing raised in a stage: dead-lettered with the exception",
    ["stage"],
)
AGENT_CRASHES = Counter(
    "parcel_risk_agent_crashes_total",
    "Agents that stopped on an exception; the worker then exits non-zero to be restarted",
    ["agent"],
)

# Drift (streams/monitoring.py DriftWatch): per worker, over its own sliding window. Each
# worker sees the parcels of its own partitions (a random share of the shippers), so every
# worker's figure estimates the same drift; across workers take the lowest,
# `min by (label) (parcel_risk_score_psi)`, so that one worker with an odd mix of shippers
# does not raise an alert that the others do not confirm.
SCORE_PSI = Gauge(
    "parcel_risk_score_psi",
    "Population stability index of a label's scores: sliding window vs the training reference",
    ["label", "model_version"],
)
FEATURE_PSI = Gauge(
    "parcel_risk_feature_psi",
    "Population stability index of a watched feature: sliding window vs the training data",
    ["feature", "model_version"],
)
DRIFT_WINDOW = Gauge(
    "parcel_risk_drift_window_parcels",
    "Parcels in this worker's drift window (PSI is shown once it holds enough)",
    ["model_version"],
)

# Outcomes: exams of held parcels (targeting.dispositions), by the hold's category and the
# model version that made it. A disposition is counted by the one worker that owns its
# shipper's partition, so summing across workers counts each exam once:
#   hit rate = sum by (category, model_version) (increase(parcel_risk_hold_hits_total[1d]))
#            / sum by (category, model_version) (increase(parcel_risk_examined_holds_total[1d]))
# The validation precision is the same on every worker that serves the version: take max.
EXAMINED_HOLDS = Counter(
    "parcel_risk_examined_holds_total",
    "Held parcels with an exam outcome, by the hold's category and model",
    ["category", "model_version"],
)
HOLD_SEIZURES = Counter(
    "parcel_risk_hold_seizures_total",
    "Examined held parcels where something was seized or found undervalued",
    ["category", "model_version"],
)
HOLD_HITS = Counter(
    "parcel_risk_hold_hits_total",
    "Examined held parcels whose outcome confirms the hold's own category",
    ["category", "model_version"],
)
VALIDATION_PRECISION = Gauge(
    "parcel_risk_validation_precision",
    "Precision of a model's holds on its validation period (the hit rate to expect)",
    ["category", "model_version"],
)


MAX_FILER_SERIES = 200
FILERS = Counter(
    "parcel_risk_filer_entries_total",
    "Per filer: entries decided, and of them held, reviewed, sampled, filed late "
    "(late_t86), without estimated arrival (t86_no_eta), or refused as invalid",
    ["filer", "kind"],
)
_filer_labels: set[str] = set()


# The board of filers (streams/filers.py): every worker reads every filer's scorecard from
# targeting.filers; the compliance sample's rates come from the weekly counts on it, so
# workers whose boards differ (one behind: a stale last update) may sample differently.
BOARD_FILERS = Gauge(
    "parcel_risk_filer_board_filers", "Filers whose scorecard this worker's board holds"
)
BOARD_UPDATES = Counter(
    "parcel_risk_filer_board_updates_total",
    "Filer scorecards this worker read from targeting.filers into its board",
)
BOARD_LAST_UPDATE = Gauge(
    "parcel_risk_filer_board_last_update_timestamp_seconds",
    "When this worker's board last read a scorecard (Unix time; 0: none yet)",
)


def board_read(filers: int, cards: int) -> None:
    """Scorecards read into the board, which now holds `filers` filers."""
    BOARD_FILERS.set(filers)
    if cards:
        BOARD_UPDATES.inc(cards)
        BOARD_LAST_UPDATE.set(time.time())


def count_filers(kinds: Iterable[tuple[str, str]]) -> None:
    """Per-filer series, for the first MAX_FILER_SERIES codes seen; the rest are 'other'."""
    for (filer, kind), n in Tally(kinds).items():
        if filer not in _filer_labels and len(_filer_labels) < MAX_FILER_SERIES:
            _filer_labels.add(filer)
        FILERS.labels(filer if filer in _filer_labels else "other", kind).inc(n)


def count_records(topics: Iterable[str]) -> None:
    for topic, n in Tally(topics).items():
        RECORDS.labels(topic).inc(n)


def count_dead_letters(where: Iterable[tuple[str, str]]) -> None:
    """Dead letters by input topic and the top-level field that failed."""
    for (topic, field), n in Tally((t, f.split(".")[0].split("[")[0]) for t, f in where).items():
        DEAD_LETTERS.labels(topic, field).inc(n)


def count_decisions(
    flagged: Sequence[tuple[int, str, str]],
    rule_hits: Sequence[str],
    event_times: Sequence[float],
) -> None:
    """A scored batch: decisions, holds by category and action, rule matches, latency
    (event times in epoch seconds, as the stages carry them)."""
    DECISIONS.inc(len(event_times))
    for (category, action), n in Tally((c, a) for _i, c, a in flagged).items():
        HOLDS.labels(category, action).inc(n)
    for rule, n in Tally(rule_hits).items():
        RULE_MATCHES.labels(rule).inc(n)
    now = time.time()
    for t in event_times:
        LATENCY_SECONDS.observe(max(0.0, now - t))


def count_exams(exams: Iterable[Exam]) -> None:
    """Exams of holds; the three series move together (a hit rate of 0 is a series at 0,
    not a missing one, which a PromQL division would drop)."""
    for exam, n in Tally(exams).items():
        EXAMINED_HOLDS.labels(exam.category, exam.model_version).inc(n)
        HOLD_SEIZURES.labels(exam.category, exam.model_version).inc(n if exam.seizure else 0)
        HOLD_HITS.labels(exam.category, exam.model_version).inc(n if exam.hit else 0)


def show_model(version: str, meta: Mapping[str, Any]) -> None:
    """A model now served: its version, and the hit rate its validation promised (none for
    artifacts trained before it was stored). Kept after a promotion: exams of its holds
    still arrive for days."""
    MODEL.info({"version": version})
    _show_validation(version, meta)


def show_shadow(version: str, meta: Mapping[str, Any]) -> None:
    """A shadow model now scored beside the serving one."""
    SHADOW_MODEL.info({"version": version})
    _show_validation(version, meta)


def _show_validation(version: str, meta: Mapping[str, Any]) -> None:
    for category, precision in (meta.get("validation_precision") or {}).items():
        if precision is not None:
            VALIDATION_PRECISION.labels(category, version).set(precision)
    for category in CATEGORIES:  # from 0, so that increase() sees the first exams too
        for counter in (EXAMINED_HOLDS, HOLD_SEIZURES, HOLD_HITS):
            counter.labels(category, version)


def count_failures(stage: str, n: int) -> None:
    if n:
        RECORD_FAILURES.labels(stage).inc(n)


def count_table_operations(table: str, reads: int, writes: int) -> None:
    TABLE_OPERATIONS.labels(table, "read").inc(reads)
    TABLE_OPERATIONS.labels(table, "write").inc(writes)


@cache
def faust_metrics() -> FaustMetrics:
    """Faust's sensors under `faust_`, registered once per process (a process may build
    more than one app: tests, benchmarks)."""
    return FaustMetrics.create(REGISTRY, FAUST_PREFIX)
