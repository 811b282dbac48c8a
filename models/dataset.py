"""Labelled data sets: parcel views with their ground truth, in time order.

The on-disk form is JSON lines, one parcel a line:
{"hawb", "event_time", "revision", "final", "manifest", "entry", "shipper_history",
 "consignee_history", "filer_history", "labels": {"fentanyl": 0|1, "counterfeit": 0|1,
 "undervaluation": 0|1}, "value_usd"}
`parcel-risk generate --dataset` writes it from synthetic traffic; `parcel-risk export`
writes it from scored decisions joined with analyst dispositions (`labelled_rows`), where a
row carries the served feature vector ("features", "model_version") instead of the view.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from models.filers import Board, Thresholds
from models.outputs import Source
from models.parcel import ParcelView
from models.pipeline import (
    Incoming,
    ParcelMessage,
    attach_filers,
    consignee_batch,
    filer_batch,
    join_batch,
    shipper_batch,
)
from models.records import CATEGORIES, FINDINGS, MAX_RECORD_BYTES, event_epoch
from models.synthetic import Event, GeneratorConfig, Label, TrafficGenerator

if TYPE_CHECKING:
    from models.tabular import TableSpec


@dataclass
class LabelledSet:
    ids: list[str]
    views: list[ParcelView]
    Y: np.ndarray  # (n, n_labels) int8
    times: np.ndarray  # epoch seconds, float64
    values: np.ndarray  # value at stake per parcel (USD), for Revenue@n%
    final: np.ndarray  # True on the last revision of each bill (what evaluation counts)
    source: str = ""
    # feature vectors as served (exported decisions); None when built from views
    X: np.ndarray | None = None
    model_versions: list[str] | None = None
    # the compliance sample's rate of each sampled row, NaN elsewhere (exported decisions)
    sample_rates: np.ndarray | None = None
    labels: tuple[str, ...] = CATEGORIES  # the columns of Y
    # which input file each row came from (train, valid, test files), when several
    part: np.ndarray | None = None
    # a table in its own schema (models/tabular.py): column name -> values, instead of views
    table: dict[str, np.ndarray] | None = None
    spec: TableSpec | None = None  # what the table's columns are

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, idx: np.ndarray) -> LabelledSet:
        """The rows at `idx`, with every column: parcel views or served feature vectors."""
        return LabelledSet(
            ids=[self.ids[i] for i in idx],
            views=[self.views[i] for i in idx] if self.views else [],
            Y=self.Y[idx],
            times=self.times[idx],
            values=self.values[idx],
            final=self.final[idx],
            source=self.source,
            X=None if self.X is None else self.X[idx],
            model_versions=(
                None if self.model_versions is None else [self.model_versions[i] for i in idx]
            ),
            sample_rates=None if self.sample_rates is None else self.sample_rates[idx],
            labels=self.labels,
            part=None if self.part is None else self.part[idx],
            table=None if self.table is None else {k: v[idx] for k, v in self.table.items()},
            spec=self.spec,
        )


def concat(sets: Sequence[LabelledSet]) -> LabelledSet:
    """Several files as one set, each row's file kept in `part` (their own split)."""
    first = sets[0]
    if any(s.labels != first.labels or (s.X is None) != (first.X is None) for s in sets):
        raise ValueError("the files have different labels or kinds of rows")
    return LabelledSet(
        ids=[i for s in sets for i in s.ids],
        views=[v for s in sets for v in s.views],
        Y=np.concatenate([s.Y for s in sets]),
        times=np.concatenate([s.times for s in sets]),
        values=np.concatenate([s.values for s in sets]),
        final=np.concatenate([s.final for s in sets]),
        source=" + ".join(s.source for s in sets),
        X=None if first.X is None else np.concatenate([s.X for s in sets if s.X is not None]),
        model_versions=(
            None
            if first.model_versions is None
            else [v for s in sets for v in s.model_versions or []]
        ),
        sample_rates=(
            None
            if any(s.sample_rates is None for s in sets)
            else np.concatenate([s.sample_rates for s in sets if s.sample_rates is not None])
        ),
        labels=first.labels,
        part=np.concatenate([np.full(len(s), k) for k, s in enumerate(sets)]),
    )


def from_rows(rows: Iterable[dict], source: str) -> LabelledSet:
    """Rows with parcel views (generate --dataset) or served feature vectors (export)."""
    ids, views, ys, times, values, final = [], [], [], [], [], []
    vectors: list[list[float | None]] = []
    versions: list[str] = []
    rates: list[float] = []
    for r in rows:
        final.append(bool(r.get("final", True)))
        ids.append(r["hawb"])
        if "features" in r:
            vectors.append(r["features"])
            versions.append(r.get("model_version", ""))
            rates.append(r.get("sample_rate") or np.nan)
        else:
            views.append(
                ParcelView(
                    hawb=r["hawb"],
                    manifest=r.get("manifest"),
                    entry=r.get("entry"),
                    shipper_history=r.get("shipper_history"),
                    consignee_history=r.get("consignee_history"),
                    filer_history=r.get("filer_history"),
                )
            )
        ys.append([int(r["labels"][c]) for c in CATEGORIES])
        times.append(event_epoch(r))
        values.append(float(r.get("value_usd") or 0.0))
    if vectors and views:
        raise ValueError(f"{source}: mixes feature-vector rows and parcel-view rows")
    X = None
    if vectors:
        X = np.array([[np.nan if x is None else x for x in v] for v in vectors], dtype=np.float32)
    return LabelledSet(
        ids,
        views,
        np.asarray(ys, dtype=np.int8).reshape(-1, len(CATEGORIES)),
        np.asarray(times),
        np.asarray(values),
        np.asarray(final, dtype=bool),
        source,
        X,
        versions or None,
        np.asarray(rates) if rates else None,
    )


def replay(
    events: Iterable[Event],
    labels: Mapping[str, Label],
    seed: int = 0,
    exam_rate_risky: float = 0.35,
    exam_rate_clean: float = 0.01,
) -> list[dict]:
    """Run traffic through the worker's own stage functions, in event-time order.

    Analysts examine some parcels and their outcomes arrive days later as dispositions
    (a share of the risky ones and a few clean ones), so shipper, consignee and filer
    history carry seizures exactly as they would online (the filers' through the owner's
    function and a board, as the worker reads them), and a parcel's own outcome is never
    in the history it is scored with. One row per decision (revision); the last revision
    of each bill is marked `final` for evaluation.
    """
    rng = np.random.default_rng(seed)
    bills: dict = {}
    consignees: dict = {}
    shippers: dict = {}
    filers: dict = {}
    board = Board()
    filer_offsets = itertools.count()  # the owner's input, in order
    pending: list[tuple[float, int, bytes, bytes]] = []  # (when, order, key, disposition)
    rows: list[dict] = []
    last_row: dict[str, int] = {}

    def run(kind: str, raw: bytes, offset: int, key: bytes) -> list[ParcelMessage]:
        res = join_batch(
            [Incoming(kind, Source("replay", 0, offset, key), raw)], bills, MAX_RECORD_BYTES
        )
        if res.filers:
            events = [m for _, m in res.filers]
            at = [next(filer_offsets) for _ in events]
            for card in filer_batch(events, at, filers, Thresholds())[0]:
                board.update(card.filer, card.as_dict())
        msgs = consignee_batch([m for _, m in res.forward], consignees)
        parcels = shipper_batch([m for _, m in msgs], shippers)
        attach_filers(parcels, board)
        return parcels

    for n, ev in enumerate(events):
        t = ev.event_time.timestamp()
        while pending and pending[0][0] <= t:
            _, k, key, raw = heapq.heappop(pending)
            run("disposition", raw, k, key)
        for p in run(ev.kind, ev.value, n, ev.key.encode()):
            hawb = p["view"]["hawb"]
            label = labels[hawb]
            flags = {c: int(getattr(label, c)) for c in CATEGORIES}
            last_row[hawb] = len(rows)
            rows.append(
                {
                    "hawb": hawb,
                    "event_time": ev.event_time.isoformat(),
                    "revision": p["revision"],
                    **p["view"],
                    "labels": flags,
                    "value_usd": label.true_value_usd,
                    "final": False,
                }
            )
            if p["revision"] == 1:
                risky = [c for c, f in flags.items() if f]
                if rng.random() < (exam_rate_risky if risky else exam_rate_clean):
                    outcome = SEIZURE_OF[risky[0]] if risky else "released"
                    when = t + float(rng.uniform(1.0, 10.0)) * 86_400.0
                    disposition = _disposition(hawb, outcome, when)
                    heapq.heappush(pending, (when, n, hawb.encode(), disposition))
    for i in last_row.values():
        rows[i]["final"] = True
    return rows


SEIZURE_OF = {category: outcome for outcome, category in FINDINGS.items()}


def _disposition(hawb: str, outcome: str, when: float) -> bytes:
    ts = datetime.fromtimestamp(when, UTC).isoformat()
    return orjson.dumps(
        {
            "schema_version": 1,
            "event_time": ts,
            "hawb": hawb,
            "outcome": outcome,
            "examined_at": ts,
            "analyst": "replay",
        }
    )


def labelled_rows(
    decisions: Sequence[Mapping[str, Any]], dispositions: Sequence[Mapping[str, Any]]
) -> Iterator[dict[str, Any]]:
    """Exported rows: one per decision, labelled from the bill's dispositions, its latest
    revision final.

    A row carries the feature vector exactly as the worker served it (so retraining has no
    skew). A seizure marks its category; a release or no exam at all counts as clean: the
    usual selection bias of customs data (only what was examined can be positive), which
    the evaluation report shows as the base rate it saw.
    """
    outcomes: dict[str, set[str]] = {}
    for d in dispositions:
        if "hawb" in d and d.get("outcome") in FINDINGS:
            outcomes.setdefault(d["hawb"], set()).add(FINDINGS[d["outcome"]])
    examined = {d["hawb"] for d in dispositions if "hawb" in d}
    final: dict[str, int] = {}
    for d in decisions:
        final[d["hawb"]] = max(final.get(d["hawb"], 0), d.get("revision", 1))
    for d in decisions:
        hawb = d["hawb"]
        positive = outcomes.get(hawb, set())
        yield {
            "hawb": hawb,
            "event_time": d["event_time"],
            "revision": d.get("revision", 1),
            "final": d.get("revision", 1) == final[hawb],
            "features": d["features"],
            "model_version": d["model_version"],
            "examined": hawb in examined,
            "sample_rate": d.get("sample_rate"),  # a compliance sample's: unbiased labels
            "labels": {c: int(c in positive) for c in CATEGORIES},
            "value_usd": d.get("declared_value_usd") or 0.0,
        }


def generated_rows(config: GeneratorConfig, count: int) -> list[dict]:
    """Synthetic traffic as labelled rows, through the worker's stages (see `replay`)."""
    gen = TrafficGenerator(config)
    events = [ev for ev in gen.events(count) if ev.bad_reason is None]
    labels = {lab.hawb: lab for lab in gen.labels()}
    return replay(events, labels, seed=config.seed)


def from_generator(config: GeneratorConfig, count: int) -> LabelledSet:
    return from_rows(generated_rows(config, count), f"synthetic(seed={config.seed}, n={count})")


def write_jsonl(rows: Iterable[dict], path: Path) -> int:
    n = 0
    with path.open("wb") as f:
        for r in rows:
            f.write(orjson.dumps(r) + b"\n")
            n += 1
    return n


def read_jsonl(path: Path) -> LabelledSet:
    def rows() -> Iterator[dict]:
        with path.open("rb") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({exc})") from None

    return from_rows(rows(), str(path))
