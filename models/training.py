"""Training: time-ordered split, features, fit, capacity thresholds, artifact.

Deterministic for a given data set and seed. The split is strictly by time (train, then
validation, then test) because targeting always scores parcels later than anything it was
trained on; a random split would flatter the model. A data scientist's own split (files or
dates) replaces the default one. Parcels get `build_features`; a table in its own schema
gets models/tabular.py's encoder, fitted on the training rows only.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from models.dataset import LabelledSet, from_generator
from models.drift import fit_reference, importance
from models.evaluation import evaluate_scores, key_hashes
from models.features import CATEGORICAL, FEATURES, INDEX, References, build_features
from models.mapping import load_data
from models.model import ParcelRiskModel
from models.records import CATEGORIES
from models.registry import ArtifactError, load, save
from models.synthetic import GeneratorConfig
from models.tabular import TableEncoder


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    train_fraction: float = 0.70
    validation_fraction: float = 0.15
    hold_capacity: float = 0.005  # share of parcels each label may hold (exam capacity)
    review_capacity: float = 0.02  # share each label may send to analyst review
    max_iter: int = 300
    learning_rate: float = 0.06
    max_leaf_nodes: int = 31


def data_hash(ds: LabelledSet) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(ds.times).tobytes())
    h.update(np.ascontiguousarray(ds.Y).tobytes())
    h.update("".join(ds.ids).encode())
    return h.hexdigest()[:16]


def capacity_thresholds(
    scores: np.ndarray,
    hold_capacity: float,
    review_capacity: float,
    labels: Sequence[str] = CATEGORIES,
) -> dict[str, dict[str, float]]:
    """Per label, the score above which the top hold/review share of parcels falls."""
    out = {}
    for j, lab in enumerate(labels):
        hold = float(np.quantile(scores[:, j], 1.0 - hold_capacity))
        review = float(np.quantile(scores[:, j], 1.0 - review_capacity))
        # never flag on an uninformative zero score
        hold = max(hold, 1e-4)
        out[lab] = {"hold": hold, "review": min(max(review, 1e-4), hold)}
    return out


def hold_precision(
    Y: np.ndarray,
    scores: np.ndarray,
    thresholds: dict[str, dict[str, float]],
    labels: Sequence[str],
) -> dict[str, float | None]:
    """Per label, the share of parcels at or above its hold threshold that have the label:
    the hit rate that exams of its holds should show (None if nothing would be held)."""
    out: dict[str, float | None] = {}
    for j, lab in enumerate(labels):
        held = scores[:, j] >= thresholds[lab]["hold"]
        out[lab] = float(Y[held, j].mean()) if held.any() else None
    return out


Split = tuple[np.ndarray, np.ndarray, np.ndarray]  # row indices: train, validation, test


def split_indices(times: np.ndarray, cfg: TrainConfig) -> Split:
    """The default: the earliest 70% trains, the next 15% validates, the latest 15% tests."""
    order = np.argsort(times, kind="stable")
    a = int(len(order) * cfg.train_fraction)
    b = int(len(order) * (cfg.train_fraction + cfg.validation_fraction))
    return order[:a], order[a:b], order[b:]


def split_at(times: np.ndarray, dates: Sequence[datetime], cfg: TrainConfig) -> Split:
    """`--split-at D1 [D2]`: validation from D1 and test from D2; with D1 alone the test
    starts at D1 and validation is the latest share of what comes before (as by default)."""
    order = np.argsort(times, kind="stable")
    cuts = [d.timestamp() for d in dates]
    if len(cuts) == 2:
        t = times[order]
        a, b = np.searchsorted(t, cuts[0]), np.searchsorted(t, cuts[1])
        return order[:a], order[a:b], order[b:]
    before = order[times[order] < cuts[0]]
    share = cfg.train_fraction / (cfg.train_fraction + cfg.validation_fraction)
    cut = int(len(before) * share)
    return before[:cut], before[cut:], order[len(before) :]


def split_by_file(ds: LabelledSet) -> Split:
    """`--train F --valid F [--test F]`: each file is its part, each in time order."""
    if ds.part is None:
        raise ValueError("the data does not say which file each row came from")

    def in_time_order(k: int) -> np.ndarray:
        rows = np.flatnonzero(ds.part == k)
        return rows[np.argsort(ds.times[rows], kind="stable")]

    return in_time_order(0), in_time_order(1), in_time_order(2)


@dataclass
class Fitted:
    """A model with the features it was fitted on: `features(idx)` gives any rows' matrix."""

    model: ParcelRiskModel
    features: Callable[[np.ndarray], np.ndarray]
    X_fit: np.ndarray
    meta: dict[str, Any]


def _fit_table(ds: LabelledSet, rows: np.ndarray, cfg: TrainConfig) -> Fitted:
    """A table of its own schema: its columns encoded from `rows` only (models/tabular.py)."""
    assert ds.table is not None and ds.spec is not None
    table = ds.table
    encoder = TableEncoder(ds.spec)
    X = encoder.fit_transform({k: v[rows] for k, v in table.items()}, ds.Y[rows])
    model = ParcelRiskModel(
        labels=ds.labels,
        categorical_features=encoder.categorical_indices,
        max_iter=cfg.max_iter,
        learning_rate=cfg.learning_rate,
        max_leaf_nodes=cfg.max_leaf_nodes,
        random_state=cfg.seed,
    ).fit(X, ds.Y[rows])
    meta = {
        "kind": "table",
        "features": encoder.feature_names,
        "table": {"spec": ds.spec.to_dict(), "encoder": encoder.state},
    }
    return Fitted(
        model, lambda idx: encoder.transform({k: v[idx] for k, v in table.items()}), X, meta
    )


def _fit(
    ds: LabelledSet, rows: np.ndarray, cfg: TrainConfig, served_refs: References | None
) -> Fitted:
    """Features learned from `rows` only (nothing from later periods), then the model."""
    if ds.table is not None:
        return _fit_table(ds, rows, cfg)
    if ds.X is not None:
        if ds.X.shape[1] != len(FEATURES):
            raise ValueError(
                f"rows have {ds.X.shape[1]} features; this version has "
                f"{len(FEATURES)}: export again with the current worker"
            )
        if served_refs is None:
            raise ValueError("feature-vector rows need the serving model's references")
        refs, X = served_refs, ds.X
    else:
        refs = References.fit([ds.views[i] for i in rows])
        X = build_features(ds.views, refs)
    model = ParcelRiskModel(
        labels=CATEGORIES,
        categorical_features=[INDEX[c] for c in CATEGORICAL],
        max_iter=cfg.max_iter,
        learning_rate=cfg.learning_rate,
        max_leaf_nodes=cfg.max_leaf_nodes,
        random_state=cfg.seed,
    ).fit(X[rows], ds.Y[rows])
    meta = {"references": refs.to_dict(), "features": list(FEATURES)}
    return Fitted(model, lambda idx: X[idx], X[rows], meta)


def constant_features(X: np.ndarray, names: Sequence[str]) -> list[str]:
    """Features with one value (or none) in training: they cannot inform the model."""
    out = []
    for j, name in enumerate(names):
        seen = X[:, j][~np.isnan(X[:, j])]
        if len(seen) == 0 or np.all(seen == seen[0]):
            out.append(name)
    return out


def train(
    ds: LabelledSet,
    cfg: TrainConfig,
    served_refs: References | None = None,
    split: Split | None = None,
    refit: bool = False,
) -> tuple[ParcelRiskModel, dict[str, Any]]:
    """Fit on the earliest data, pick thresholds on the next, measure on the latest.

    `split` is the data scientist's own (files or dates; default: 70/15/15 by time). With
    `refit` the final model learns from train and validation together; its thresholds stay
    those the train-only model chose on validation, since the refit model has seen those
    rows. With no test rows the figures are the validation period's.

    Exported data carries feature vectors as served; they were computed against the
    serving model's reference medians, which the new artifact must then keep
    (`served_refs`) so the worker computes the same features for it.
    """
    if len(ds) < 1000:
        raise ValueError(f"need at least 1000 labelled parcels, got {len(ds)}")
    tr, va, te = split if split is not None else split_indices(ds.times, cfg)
    if not len(tr) or not len(va):
        raise ValueError(f"the split leaves {len(tr)} training and {len(va)} validation rows")
    fitted = _fit(ds, tr, cfg, served_refs)
    va_scores = fitted.model.predict_proba(fitted.features(va))
    thresholds = capacity_thresholds(va_scores, cfg.hold_capacity, cfg.review_capacity, ds.labels)
    # drift reference (parcel models: their features are what the worker watches): features
    # as trained on; scores on rows the model has not seen (in-sample scores of boosted
    # trees are sharper than any live traffic's)
    drift = None
    if ds.table is None:
        gain = importance(fitted.model)
        drift = fit_reference(va_scores, ds.labels, thresholds, fitted.X_fit, gain).to_dict()
    validation_precision = hold_precision(ds.Y[va], va_scores, thresholds, ds.labels)
    va_final = va[ds.final[va]]
    va_metrics = evaluate_scores(
        ds.Y[va_final],
        fitted.model.predict_proba(fitted.features(va_final)),
        ds.values[va_final],
        ds.labels,
    )
    fit_rows = tr
    if refit:
        fit_rows = np.concatenate([tr, va])
        fitted = _fit(ds, fit_rows, cfg, served_refs)
    te = te[ds.final[te]]  # one row per bill: its last (fullest) revision
    test_metrics = (
        evaluate_scores(
            ds.Y[te], fitted.model.predict_proba(fitted.features(te)), ds.values[te], ds.labels
        )
        if len(te)
        else va_metrics
    )
    with warnings.catch_warnings():  # an all-missing column has no median: NaN is right
        warnings.simplefilter("ignore", RuntimeWarning)
        medians = np.nanmedian(fitted.X_fit, axis=0)
    meta = {
        **fitted.meta,
        "n_features": len(fitted.meta["features"]),
        "drift": drift,
        "validation_precision": validation_precision,
        "feature_medians": [None if np.isnan(m) else float(m) for m in medians],
        "constant_features": constant_features(fitted.X_fit, fitted.meta["features"]),
        "thresholds": thresholds,
        "labels": list(ds.labels),
        "seed": cfg.seed,
        "capacity": {"hold": cfg.hold_capacity, "review": cfg.review_capacity},
        "data": {
            "source": ds.source,
            "hash": data_hash(ds),
            "rows": len(ds),
            "time_range": [str(ds.times.min()), str(ds.times.max())],
            "split": {"train": len(tr), "validation": len(va), "test": len(te)},
            "refit": refit,
        },
        "validation_metrics": va_metrics,
        "test_metrics": test_metrics,
        "measured_on": "test" if len(te) else "validation",
    }
    if ds.spec is not None and ds.spec.keys:  # what evaluation's memorisation check needs
        seen = np.unique(key_hashes(ds.subset(fit_rows), ds.spec.keys))
        meta["memorisation"] = {"keys": list(ds.spec.keys), "seen": seen.tolist()}
    return fitted.model, meta


def train_and_save(
    ds: LabelledSet,
    out: Path,
    cfg: TrainConfig,
    served_refs: References | None = None,
    split: Split | None = None,
    refit: bool = False,
) -> tuple[str, dict[str, Any]]:
    model, meta = train(ds, cfg, served_refs, split, refit)
    return save(out, model, meta), meta


def served_references(ds: LabelledSet, model_dir: Path) -> References | None:
    """The references of the model that served exported rows (the one most of them name),
    or None for rows of parcel views, which get features of their own."""
    if ds.X is None or not ds.model_versions:
        return None
    served = Counter(ds.model_versions).most_common(1)[0][0]
    try:
        return load(model_dir, served).references
    except ArtifactError as exc:
        raise ValueError(f"the data was scored by {served}: {exc}") from None


def run(
    files: Sequence[Path],
    mapping: Path | None,
    out: Path,
    model_dir: Path,
    cfg: TrainConfig,
    synthetic: int = 100_000,
    dates: Sequence[datetime] = (),
    refit: bool = False,
) -> tuple[str, dict[str, Any]]:
    """`parcel-risk train`: labelled files (or `synthetic` generated parcels) -> a saved
    artifact in `out`; returns its version and meta. One file is split by time (at `dates`
    if given); two or three files are train, validation and test. ValueError says what is
    wrong."""
    if len(dates) > 2 or sorted(dates) != list(dates):
        raise ValueError("--split-at takes one date, or two in time order")
    if len(files) > 1 and dates:
        raise ValueError("--split-at splits one file; train, valid and test files are split")
    if files:
        ds = load_data(files, mapping)
    else:
        ds = from_generator(GeneratorConfig(seed=cfg.seed), synthetic)
    if len(files) > 1:
        split: Split | None = split_by_file(ds)
    elif dates:
        split = split_at(ds.times, dates, cfg)
    else:
        split = None
    return train_and_save(ds, out, cfg, served_references(ds, model_dir), split, refit)
