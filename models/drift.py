"""Drift: how far the parcels a model scores have moved from the ones it was trained for.

The population stability index (PSI) compares the share of parcels in fixed bins:
`sum((live - ref) * ln(live / ref))`; below 0.1 is stable, 0.1-0.2 a moderate move, above
0.2 a shift worth acting on (the alert line in deploy/prometheus/alerts.yml).

At training time `fit_reference` bins each label's score and the most important features
and stores the bin edges and shares in the artifact (`meta["drift"]`). The worker counts
its parcels into the same bins with numpy (`Window.add`, one `searchsorted` and `bincount`
per column and batch) over a sliding time window, and computes PSI from the counts only
when asked (`Window.psi`, every few seconds), never per record. The evaluation report uses
the same functions to compare two periods of a data set.

Pure numpy: no Kafka here.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.features import FEATURES, INDEX
from models.model import ParcelRiskModel

BINS = 10
TOP_FEATURES = 8
SHARE_FLOOR = 1e-4  # an empty bin would make PSI infinite; the usual floor
ALERT_PSI = 0.2


@dataclass(frozen=True)
class Bins:
    """Bins of one quantity: `edges` between them (ascending), one more bin above the last
    edge, and a last bin for missing values (NaN), whose share drifts too."""

    edges: np.ndarray
    shares: np.ndarray  # reference share per bin, len(edges) + 2, sums to 1

    @classmethod
    def fit(cls, values: np.ndarray, bins: int = BINS, extra_edges: Sequence[float] = ()) -> Bins:
        """Equal-count bins of `values` (fewer when values repeat: a 0/1 feature gets two);
        `extra_edges` adds cut points that matter (a label's hold and review thresholds)."""
        v = np.asarray(values, dtype=np.float64)
        present = v[~np.isnan(v)]
        distinct = np.unique(present)
        if len(distinct) <= bins:
            edges = (distinct[1:] + distinct[:-1]) / 2.0
        else:
            edges = np.unique(np.quantile(present, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
        edges = np.unique(np.concatenate([edges, np.asarray(extra_edges, dtype=np.float64)]))
        empty = cls(edges, np.zeros(len(edges) + 2))
        counts = empty.counts(v)
        return cls(edges, counts / max(1, counts.sum()))

    @property
    def size(self) -> int:
        return len(self.edges) + 2

    def counts(self, values: np.ndarray) -> np.ndarray:
        """Values per bin (int64, `size` long)."""
        v = np.asarray(values, dtype=np.float64)
        idx = np.searchsorted(self.edges, v, side="right")
        idx[np.isnan(v)] = len(self.edges) + 1
        return np.bincount(idx, minlength=self.size)

    def to_dict(self) -> dict[str, list[float]]:
        return {"edges": self.edges.tolist(), "shares": self.shares.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Sequence[float]]) -> Bins:
        edges = np.asarray(d["edges"], dtype=np.float64)
        shares = np.asarray(d["shares"], dtype=np.float64)
        if len(shares) != len(edges) + 2 or np.any(np.diff(edges) <= 0):
            raise ValueError("drift bins: edges must ascend and shares be one longer than bins")
        return cls(edges, shares)


def psi(reference: np.ndarray, counts: np.ndarray) -> float:
    """Population stability index of live `counts` against `reference` shares."""
    total = counts.sum()
    if not total:
        return math.nan
    live = np.maximum(counts / total, SHARE_FLOOR)
    ref = np.maximum(reference, SHARE_FLOOR)
    return float(np.sum((live - ref) * np.log(live / ref)))


def importance(model: ParcelRiskModel) -> np.ndarray:
    """Split gain per feature, each label's share summed over labels (so a rare label's
    features count as much as a common one's)."""
    total = np.zeros(len(FEATURES))
    for clf in model.estimators_:
        if clf is None:
            continue
        gain = np.zeros(len(FEATURES))
        for iteration in clf._predictors:  # fitted trees; sklearn has no public gain API
            for tree in iteration:
                nodes = tree.nodes[~tree.nodes["is_leaf"].astype(bool)]
                np.add.at(gain, nodes["feature_idx"], nodes["gain"])
        if gain.sum() > 0:
            total += gain / gain.sum()
    return total


def top_features(gain: np.ndarray, top: int = TOP_FEATURES) -> list[int]:
    """Indexes of the `top` features by gain (those the model used at all)."""
    return [int(i) for i in np.argsort(-gain, kind="stable")[:top] if gain[i] > 0]


Key = tuple[str, str]  # ("score", label) or ("feature", name)


@dataclass(frozen=True)
class Reference:
    """What a model's traffic looked like: bins per label score and per watched feature."""

    scores: dict[str, Bins]
    features: dict[str, Bins]

    def bins(self) -> dict[Key, Bins]:
        """Every binned quantity: label scores first, then features."""
        out = {("score", k): b for k, b in self.scores.items()}
        return out | {("feature", k): b for k, b in self.features.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "scores": {k: b.to_dict() for k, b in self.scores.items()},
            "features": {k: b.to_dict() for k, b in self.features.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Reference:
        unknown = set(d["features"]) - set(INDEX)
        if unknown:
            raise ValueError(f"drift reference names unknown features {sorted(unknown)}")
        return cls(
            {k: Bins.from_dict(b) for k, b in d["scores"].items()},
            {k: Bins.from_dict(b) for k, b in d["features"].items()},
        )


def fit_reference(
    scores: np.ndarray,
    labels: Sequence[str],
    thresholds: Mapping[str, Mapping[str, float]],
    X: np.ndarray,
    gain: np.ndarray,
    top: int = TOP_FEATURES,
) -> Reference:
    """Bins of each label's scores (deciles plus its review and hold thresholds) and of
    the `top` features by `gain`, from the given rows."""
    score_bins = {
        lab: Bins.fit(
            scores[:, j], extra_edges=(thresholds[lab]["review"], thresholds[lab]["hold"])
        )
        for j, lab in enumerate(labels)
    }
    return Reference(score_bins, {FEATURES[i]: Bins.fit(X[:, i]) for i in top_features(gain, top)})


def reference_of(meta: Mapping[str, Any]) -> Reference | None:
    """The artifact's drift reference; None for artifacts trained before it was stored."""
    stored = meta.get("drift")
    return None if stored is None else Reference.from_dict(stored)


def watched(
    reference: Reference | None, model: ParcelRiskModel, labels: Sequence[str]
) -> list[Key]:
    """What drift is measured on: the reference's labels and features, or for a model
    stored without one, every label and its top features by gain."""
    if reference is not None:
        return list(reference.bins())
    chosen = top_features(importance(model))
    return [("score", k) for k in labels] + [("feature", FEATURES[i]) for i in chosen]


def compare(earlier: np.ndarray, later: np.ndarray) -> float:
    """PSI of `later` values against bins fitted on `earlier` ones (two periods of data)."""
    bins = Bins.fit(earlier)
    return psi(bins.shares, bins.counts(later))


class Window:
    """Counts of the parcels scored in the last `window_s` seconds, in the reference's
    bins: `slots` slots of `window_s / slots` each, the oldest dropped as time moves on."""

    def __init__(self, reference: Reference, window_s: float, slots: int = 12) -> None:
        self.reference = reference
        self.slot_s = window_s / slots
        self.slots = slots
        self.bins = reference.bins()
        self.labels = list(reference.scores)
        self.columns = [INDEX[k] for k in reference.features]
        # one flat counts vector per slot; each key owns a contiguous run of it
        self.offsets: dict[Key, tuple[int, int]] = {}
        start = 0
        for key, b in self.bins.items():
            self.offsets[key] = (start, start + b.size)
            start += b.size
        self.width = start
        self.recent: deque[tuple[int, np.ndarray]] = deque()

    def _current(self, now: float) -> np.ndarray:
        slot = int(now // self.slot_s)
        self._expire(slot)
        if not self.recent or self.recent[-1][0] != slot:
            self.recent.append((slot, np.zeros(self.width, dtype=np.int64)))
        return self.recent[-1][1]

    def _expire(self, slot: int) -> None:
        while self.recent and self.recent[0][0] <= slot - self.slots:
            self.recent.popleft()

    def add(self, scores: np.ndarray, X: np.ndarray, now: float) -> None:
        """A scored batch: `scores` (n, labels in the reference's order), `X` its features."""
        if not len(scores):
            return
        counts = self._current(now)
        columns = [scores[:, j] for j in range(len(self.labels))]
        columns += [X[:, i] for i in self.columns]
        for (lo, hi), b, col in zip(
            self.offsets.values(), self.bins.values(), columns, strict=True
        ):
            counts[lo:hi] += b.counts(col)

    def count(self, now: float) -> int:
        """Parcels in the window."""
        self._expire(int(now // self.slot_s))
        lo, hi = next(iter(self.offsets.values()))
        return int(sum(c[lo:hi].sum() for _s, c in self.recent))

    def psi(self, now: float, min_count: int) -> dict[Key, float]:
        """PSI per label score and watched feature over the window; empty until it holds
        `min_count` parcels (a handful of parcels says nothing about a distribution)."""
        if self.count(now) < min_count:
            return {}
        total = np.sum([c for _s, c in self.recent], axis=0)
        return {
            key: psi(self.bins[key].shares, total[lo:hi]) for key, (lo, hi) in self.offsets.items()
        }
