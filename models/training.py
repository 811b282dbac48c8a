"""Training: time-ordered split, features, fit, capacity thresholds, artifact.

Deterministic for a given data set and seed. The split is strictly by time (train, then
validation, then test) because targeting always scores parcels later than anything it was
trained on; a random split would flatter the model.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.dataset import LabelledSet, from_generator
from models.drift import fit_reference, importance
from models.evaluation import evaluate_scores
from models.features import CATEGORICAL, FEATURES, INDEX, References, build_features
from models.mapping import load_data
from models.model import ParcelRiskModel
from models.records import CATEGORIES
from models.registry import ArtifactError, load, save
from models.synthetic import GeneratorConfig


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    train_fraction: float = 0.70
    validation_fraction: float = 0.15
    hold_capacity: float = 0.005  # share of parcels each label may hold (exam capacity)
    review_capacity: float = 0.02  # share each label may send to analyst review
    max_iter: int = 300


def data_hash(ds: LabelledSet) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(ds.times).tobytes())
    h.update(np.ascontiguousarray(ds.Y).tobytes())
    h.update("".join(ds.ids).encode())
    return h.hexdigest()[:16]


def capacity_thresholds(
    scores: np.ndarray, hold_capacity: float, review_capacity: float
) -> dict[str, dict[str, float]]:
    """Per label, the score above which the top hold/review share of parcels falls."""
    out = {}
    for j, lab in enumerate(CATEGORIES):
        hold = float(np.quantile(scores[:, j], 1.0 - hold_capacity))
        review = float(np.quantile(scores[:, j], 1.0 - review_capacity))
        # never flag on an uninformative zero score
        hold = max(hold, 1e-4)
        out[lab] = {"hold": hold, "review": min(max(review, 1e-4), hold)}
    return out


def hold_precision(
    Y: np.ndarray, scores: np.ndarray, thresholds: dict[str, dict[str, float]]
) -> dict[str, float | None]:
    """Per label, the share of parcels at or above its hold threshold that have the label:
    the hit rate that exams of its holds should show (None if nothing would be held)."""
    out: dict[str, float | None] = {}
    for j, lab in enumerate(CATEGORIES):
        held = scores[:, j] >= thresholds[lab]["hold"]
        out[lab] = float(Y[held, j].mean()) if held.any() else None
    return out


def split_indices(times: np.ndarray, cfg: TrainConfig) -> tuple[np.ndarray, ...]:
    order = np.argsort(times, kind="stable")
    a = int(len(order) * cfg.train_fraction)
    b = int(len(order) * (cfg.train_fraction + cfg.validation_fraction))
    return order[:a], order[a:b], order[b:]


def train(
    ds: LabelledSet, cfg: TrainConfig, served_refs: References | None = None
) -> tuple[ParcelRiskModel, dict[str, Any]]:
    """Fit on the earliest data, pick thresholds on the next, measure on the latest.

    Exported data carries feature vectors as served; they were computed against the
    serving model's reference medians, which the new artifact must then keep
    (`served_refs`) so the worker computes the same features for it.
    """
    if len(ds) < 1000:
        raise ValueError(f"need at least 1000 labelled parcels, got {len(ds)}")
    tr, va, te = split_indices(ds.times, cfg)
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
        refs = References.fit([ds.views[i] for i in tr])
        X = build_features(ds.views, refs)
    model = ParcelRiskModel(
        labels=CATEGORIES,
        categorical_features=[INDEX[c] for c in CATEGORICAL],
        max_iter=cfg.max_iter,
        random_state=cfg.seed,
    ).fit(X[tr], ds.Y[tr])
    validation_scores = model.predict_proba(X[va])
    thresholds = capacity_thresholds(validation_scores, cfg.hold_capacity, cfg.review_capacity)
    # drift reference: features as trained on; scores as on parcels the model has not
    # seen (in-sample scores of boosted trees are sharper than any live traffic's)
    drift = fit_reference(
        validation_scores, CATEGORIES, thresholds, X[tr], importance(model)
    ).to_dict()
    te = te[ds.final[te]]  # one row per bill: its last (fullest) revision
    test_metrics = evaluate_scores(ds.Y[te], model.predict_proba(X[te]), ds.values[te], CATEGORIES)
    with warnings.catch_warnings():  # an all-missing column has no median: NaN is right
        warnings.simplefilter("ignore", RuntimeWarning)
        medians = np.nanmedian(X[tr], axis=0)
    meta = {
        "references": refs.to_dict(),
        "thresholds": thresholds,
        "drift": drift,
        "validation_precision": hold_precision(ds.Y[va], validation_scores, thresholds),
        "feature_medians": [None if np.isnan(m) else float(m) for m in medians],
        "labels": list(CATEGORIES),
        "seed": cfg.seed,
        "capacity": {"hold": cfg.hold_capacity, "review": cfg.review_capacity},
        "data": {
            "source": ds.source,
            "hash": data_hash(ds),
            "rows": len(ds),
            "time_range": [str(ds.times.min()), str(ds.times.max())],
            "split": {"train": len(tr), "validation": len(va), "test": len(te)},
        },
        "test_metrics": test_metrics,
        "n_features": len(FEATURES),
    }
    return model, meta


def train_and_save(
    ds: LabelledSet, out: Path, cfg: TrainConfig, served_refs: References | None = None
) -> tuple[str, dict[str, Any]]:
    model, meta = train(ds, cfg, served_refs)
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
    data: Path | None,
    mapping: Path | None,
    out: Path,
    model_dir: Path,
    cfg: TrainConfig,
    synthetic: int = 100_000,
) -> tuple[str, dict[str, Any]]:
    """`parcel-risk train`: a labelled file (or `synthetic` generated parcels) -> a saved
    artifact in `out`; returns its version and meta. ValueError says what is wrong."""
    if data is not None:
        ds = load_data(data, mapping)
    else:
        ds = from_generator(GeneratorConfig(seed=cfg.seed), synthetic)
    return train_and_save(ds, out, cfg, served_references(ds, model_dir))
