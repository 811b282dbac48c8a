"""Batch scoring: views -> features -> calibrated scores -> action and category.

Pure functions over numpy arrays so the worker, the evaluation and the tests share them.
Per label there are two thresholds chosen at training time by examination capacity: above
`hold` the parcel is held for exam, above `review` it goes to an analyst's review queue.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from models.features import build_features
from models.parcel import ParcelView
from models.reasons import explain
from models.records import CATEGORIES
from models.registry import Artifact


@dataclass(frozen=True)
class Scored:
    features: np.ndarray  # (n, n_features) float32
    scores: np.ndarray  # (n, n_labels) calibrated probabilities
    actions: list[str | None]  # "hold", "review" or None
    categories: list[str | None]  # the label that triggered the action


def threshold_matrix(
    thresholds: Mapping[str, Mapping[str, float]], labels: Sequence[str] = CATEGORIES
) -> tuple[np.ndarray, np.ndarray]:
    hold = np.array([thresholds[c]["hold"] for c in labels])
    review = np.array([thresholds[c]["review"] for c in labels])
    return hold, review


def decide(
    scores: np.ndarray,
    thresholds: Mapping[str, Mapping[str, float]],
    labels: Sequence[str] = CATEGORIES,
) -> tuple[list[str | None], list[str | None]]:
    """Action and category per parcel: the label furthest above its own threshold wins."""
    hold_t, review_t = threshold_matrix(thresholds, labels)
    hold_ratio = scores / hold_t
    review_ratio = scores / review_t
    is_hold = (hold_ratio >= 1.0).any(axis=1)
    is_review = ~is_hold & (review_ratio >= 1.0).any(axis=1)
    cat_idx = np.where(is_hold, hold_ratio.argmax(axis=1), review_ratio.argmax(axis=1))
    actions: list[str | None] = [None] * len(scores)
    categories: list[str | None] = [None] * len(scores)
    for i in np.flatnonzero(is_hold | is_review):
        actions[i] = "hold" if is_hold[i] else "review"
        categories[i] = labels[cat_idx[i]]
    return actions, categories


class Scorer:
    """A loaded artifact ready to score batches of views."""

    def __init__(
        self, artifact: Artifact, thresholds: Mapping[str, Mapping[str, float]] | None = None
    ) -> None:
        self.artifact = artifact
        self.version = artifact.version
        self.thresholds = dict(thresholds or artifact.thresholds)

    def score(self, views: Sequence[ParcelView]) -> Scored:
        X = build_features(views, self.artifact.references)
        scores = self.artifact.model.predict_proba(X)
        actions, categories = decide(scores, self.thresholds)
        return Scored(X, scores, actions, categories)

    def reasons(self, views: Sequence[ParcelView], scored: Scored) -> dict[int, list[str]]:
        """Plain-word reasons for every flagged parcel in the batch, by row index."""
        rows = [i for i, a in enumerate(scored.actions) if a is not None]
        if not rows:
            return {}
        label_idx = [CATEGORIES.index(scored.categories[i]) for i in rows]
        texts = explain(
            self.artifact.model,
            [views[i] for i in rows],
            scored.features[rows],
            label_idx,
            self.artifact.feature_medians,
            self.artifact.references,
            base=scored.scores[rows, label_idx],  # already scored: one model call, not two
        )
        return dict(zip(rows, texts, strict=True))
