"""Model quality as customs targeting measures it (design.md).

Officers can examine a few percent of parcels, so the headline figures are Precision@n%,
Recall@n% and Revenue@n% (the share of the value at stake caught) for n = 1, 2, 5, 10 on a
strictly later test period, with the base rate beside them. AUC, PR-AUC and calibration
error are secondary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from models.dataset import LabelledSet
from models.drift import Key, compare, psi, reference_of, watched
from models.features import INDEX, build_features
from models.records import CATEGORIES
from models.registry import Artifact
from models.sampling import violation_rate
from models.tabular import TableEncoder, TableSpec

TOP_PERCENTS = (1, 2, 5, 10)


def at_top(y: np.ndarray, score: np.ndarray, value: np.ndarray, pct: float) -> dict[str, float]:
    """Precision, recall and revenue share among the top `pct` percent by score."""
    n = max(1, round(len(y) * pct / 100.0))
    top = np.argsort(-score, kind="stable")[:n]
    positives = y.sum()
    caught_value = float((value[top] * y[top]).sum())
    total_value = float((value * y).sum())
    return {
        "precision": float(y[top].mean()),
        "recall": float(y[top].sum() / positives) if positives else float("nan"),
        "revenue": caught_value / total_value if total_value else float("nan"),
    }


def calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-count bins (robust at low base rates)."""
    order = np.argsort(p)
    err = 0.0
    for chunk in np.array_split(order, bins):
        if len(chunk):
            err += len(chunk) * abs(p[chunk].mean() - y[chunk].mean())
    return float(err / len(p))


def label_metrics(y: np.ndarray, score: np.ndarray, value: np.ndarray) -> dict[str, Any]:
    y = np.asarray(y, dtype=np.int8)
    both = 0 < y.sum() < len(y)
    out: dict[str, Any] = {
        "n": len(y),
        "positives": int(y.sum()),
        "base_rate": float(y.mean()) if len(y) else float("nan"),
        "roc_auc": float(roc_auc_score(y, score)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, score)) if both else float("nan"),
        "calibration_error": calibration_error(y, score) if len(y) else float("nan"),
    }
    for pct in TOP_PERCENTS:
        for k, v in at_top(y, score, value, pct).items():
            out[f"{k}@{pct}%"] = v
    return out


def evaluate_scores(
    Y: np.ndarray, scores: np.ndarray, values: np.ndarray, labels: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per-label metrics for a (n, n_labels) score matrix."""
    return {lab: label_metrics(Y[:, j], scores[:, j], values) for j, lab in enumerate(labels)}


def on_sample(y: np.ndarray, score: np.ndarray, rates: np.ndarray) -> dict[str, float]:
    """Violation rate, precision and recall among the top n% estimated on the compliance
    sample (rows with a rate; each weighted by 1 / rate): unbiased, unlike the targeted
    exams, which only see what a model chose. The top n% is cut over all rows' scores."""
    sampled = ~np.isnan(rates)
    est = violation_rate(
        zip(y[sampled].astype(bool).tolist(), rates[sampled].tolist(), strict=True)
    )
    out = {"sampled": float(est.examined), "violative": float(est.violative), "rate": est.rate}
    out |= {"low": est.low, "high": est.high}
    w, ys, s = 1.0 / rates[sampled], y[sampled], score[sampled]
    for pct in TOP_PERCENTS:
        n = max(1, round(len(y) * pct / 100.0))
        cut = np.sort(score)[::-1][n - 1] if len(score) else np.inf
        top = s >= cut
        caught = float((w * ys * top).sum())
        out[f"precision@{pct}%"] = caught / float((w * top).sum()) if top.any() else np.nan
        out[f"recall@{pct}%"] = caught / float((w * ys).sum()) if ys.any() else np.nan
    return out


def key_hashes(ds: LabelledSet, columns: Sequence[str]) -> np.ndarray:
    """Per row, a stable 53-bit hash (JSON-safe) of its key columns' values as written."""
    assert ds.table is not None
    keys = ("\x1f".join(vals) for vals in zip(*(ds.table[c] for c in columns), strict=True))
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest()) & (2**53 - 1)
            for k in keys
        ],
        dtype=np.int64,
    )


def memorisation(
    seen_keys: np.ndarray, ds: LabelledSet, scores: np.ndarray, columns: Sequence[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """The figures on rows whose key columns (e.g. HS code, price, mass) appeared in training
    and on rows never seen: a model that remembers rather than generalises does well only
    on the first."""
    seen = np.isin(key_hashes(ds, columns), seen_keys)
    return {
        name: evaluate_scores(ds.Y[rows], scores[rows], ds.values[rows], ds.labels)
        for name, rows in (("seen in training", seen), ("never seen", ~seen))
        if rows.any()
    }


@dataclass(frozen=True)
class Evaluation:
    data: LabelledSet  # the rows measured: each bill's last revision
    scores: np.ndarray  # (n, n_labels)
    metrics: dict[str, dict[str, Any]]
    # per label, on the compliance sample (exported decisions with sampled rows)
    sampled: dict[str, dict[str, float]] | None = None
    # by "seen in training" / "never seen": per-label metrics (tables with key columns)
    memorisation: dict[str, dict[str, dict[str, Any]]] | None = None


def evaluate_model(artifact: Artifact, ds: LabelledSet) -> Evaluation:
    """A model on labelled data, one row per bill (its last, fullest revision)."""
    if tuple(artifact.meta["labels"]) != ds.labels:
        raise ValueError(
            f"model {artifact.version} scores {artifact.meta['labels']}; "
            f"the data has labels {list(ds.labels)}"
        )
    if (artifact.meta.get("kind") == "table") != (ds.table is not None):
        raise ValueError(
            f"model {artifact.version} needs data mapped as it was trained "
            "(a table's [features] mapping, or parcels)"
        )
    ds = ds.subset(np.flatnonzero(ds.final))
    scores = artifact.model.predict_proba(features(artifact, ds))
    rates = ds.sample_rates
    sampled = None
    if rates is not None and (~np.isnan(rates)).any():
        sampled = {
            lab: on_sample(ds.Y[:, j], scores[:, j], rates) for j, lab in enumerate(ds.labels)
        }
    memo = artifact.meta.get("memorisation")
    return Evaluation(
        ds,
        scores,
        evaluate_scores(ds.Y, scores, ds.values, ds.labels),
        sampled,
        memorisation(np.asarray(memo["seen"]), ds, scores, memo["keys"]) if memo else None,
    )


def features(artifact: Artifact, ds: LabelledSet) -> np.ndarray:
    """Served feature vectors (exported decisions) as they are; parcel views get the
    artifact's own features; a table in its own schema its encoder's."""
    if ds.table is not None:
        table = artifact.meta["table"]
        return TableEncoder(TableSpec.from_dict(table["spec"]), table["encoder"]).transform(
            ds.table
        )
    return ds.X if ds.X is not None else build_features(ds.views, artifact.references)


@dataclass(frozen=True)
class PeriodDrift:
    """Drift between two periods of the evaluated data, split at `boundary`."""

    boundary: float  # epoch seconds: the later period starts here
    sizes: tuple[int, int]  # parcels in the earlier and the later period
    between: dict[Key, float]  # PSI of the later period against the earlier one
    # PSI of each period against the model's training reference (None: none stored)
    vs_reference: dict[Key, tuple[float, float]] | None


def period_drift(artifact: Artifact, ds: LabelledSet, boundary: float | None = None) -> PeriodDrift:
    """Compare the scores and watched features of the data before and after `boundary`
    (default: the median event time, two halves). Every row counts, each revision of a
    bill as the worker scores it, as in the training reference; ValueError if a period is
    empty."""
    if ds.table is not None:
        raise ValueError("drift is measured on parcel models, whose features the worker watches")
    if boundary is None:
        boundary = float(np.median(ds.times))
    later = ds.times >= boundary
    if later.all() or not later.any():
        raise ValueError("both periods need parcels: choose a time inside the data's range")
    X = features(artifact, ds)
    scores = artifact.model.predict_proba(X)
    reference = reference_of(artifact.meta)

    def column(key: Key) -> np.ndarray:
        kind, name = key
        return scores[:, CATEGORIES.index(name)] if kind == "score" else X[:, INDEX[name]]

    keys = watched(reference, artifact.model, CATEGORIES)
    between = {k: compare(column(k)[~later], column(k)[later]) for k in keys}
    vs_reference = None
    if reference is not None:
        bins = reference.bins()
        vs_reference = {
            k: (
                psi(bins[k].shares, bins[k].counts(column(k)[~later])),
                psi(bins[k].shares, bins[k].counts(column(k)[later])),
            )
            for k in keys
        }
    return PeriodDrift(boundary, (int((~later).sum()), int(later.sum())), between, vs_reference)
