"""The model's trees predicted by treelite's GTIL for small batches answer as scikit-learn
does, to rounding, on every row: known, missing and unseen categories alike."""

from __future__ import annotations

import copy
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import treelite
import treelite.gtil
from sklearn.ensemble import HistGradientBoostingClassifier

from models import registry
from models.dataset import from_generator
from models.features import build_features
from models.synthetic import GeneratorConfig
from models.trees import ROWS, SmallBatches

AGREE = 1e-12  # summing the same leaves in another order


@pytest.fixture(scope="module")
def crafted() -> tuple[HistGradientBoostingClassifier, np.ndarray]:
    """Two categorical features, one of them a single category or missing: scikit-learn's
    splits on it share a bitset row with another feature's, which treelite misreads."""
    rng = np.random.default_rng(0)
    n = 4000
    X = np.column_stack(
        [
            rng.choice(np.arange(5, 100, 4.0), n),
            np.where(rng.random(n) < 0.5, 0.0, np.nan),
            rng.normal(size=n),
        ]
    )
    y = (X[:, 0] % 8 == 1) ^ np.isnan(X[:, 1]) ^ (X[:, 2] > 0.5)
    y = np.where(rng.random(n) < 0.1, ~y, y).astype(int)
    clf = HistGradientBoostingClassifier(
        max_iter=50, categorical_features=[0, 1], random_state=0
    ).fit(X, y)
    return clf, X[:ROWS]


def test_small_batches_agree_where_treelite_alone_does_not(crafted) -> None:  # type: ignore[no-untyped-def]
    clf, X = crafted
    expected = clf.predict_proba(X)[:, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        plain = treelite.sklearn.import_model(clf)
    alone = np.asarray(treelite.gtil.predict(plain, X, nthread=1)).reshape(len(X), -1)[:, -1]
    # treelite 4.8 itself: a release that fixes it shows here, and the copy can go
    assert np.abs(alone - expected).max() > 0.01
    assert np.abs(SmallBatches(clf).proba(X) - expected).max() < AGREE


@pytest.mark.parametrize("values", [[3.0, 1000.0], [-1.0, -7.0], [2.5, 9.5], [np.nan], [1e12]])
def test_unseen_categories_are_missing_values_as_in_scikit_learn(crafted, values) -> None:  # type: ignore[no-untyped-def]
    clf, X = crafted
    rng = np.random.default_rng(1)
    X = X.copy()
    X[:, 0] = np.where(rng.random(len(X)) < 0.5, rng.choice(values, len(X)), X[:, 0])
    X[:, 1] = np.where(rng.random(len(X)) < 0.5, rng.choice(values, len(X)), X[:, 1])
    expected = clf.predict_proba(X)[:, 1]
    assert np.abs(SmallBatches(clf).proba(X) - expected).max() < AGREE


def test_the_model_scores_a_parcel_alike_in_any_batch(model_dir: Path) -> None:
    """Small batches go through GTIL, large ones through scikit-learn: one answer."""
    artifact = registry.load(model_dir)
    X = build_features(from_generator(GeneratorConfig(seed=21), 600).views, artifact.references)
    med = np.asarray(artifact.feature_medians, dtype=np.float32)
    occluded = X.copy()  # rows as reasons make: one fact at a time made typical
    facts = np.random.default_rng(0).integers(0, X.shape[1], len(X))
    occluded[np.arange(len(X)), facts] = med[facts]
    unseen = X.copy()  # a category training never saw (a new HS chapter, say)
    cats = np.asarray(artifact.model.categorical_features)
    unseen[np.arange(len(X)), cats[np.arange(len(X)) % len(cats)]] = 999.0
    third = ROWS // 2 + 25  # every kind of row, more of them than one small batch
    X = np.concatenate([X[:third], occluded[:third], unseen[:third]])
    large = artifact.model.predict_proba(X)
    small = np.concatenate(
        [artifact.model.predict_proba(X[i : i + 7]) for i in range(0, len(X), 7)]
    )
    assert np.abs(small - large).max() < AGREE
    for j in range(large.shape[1]):
        assert np.abs(artifact.model.predict_label(X[:9], j) - large[:9, j]).max() < AGREE


def test_a_saved_model_holds_no_native_trees_and_rebuilds_them(model_dir: Path) -> None:
    artifact = registry.load(model_dir)
    model = artifact.model
    assert "trees_" not in model.__getstate__() and len(model.trees_) == len(model.labels)
    X = build_features(from_generator(GeneratorConfig(seed=22), 50).views, artifact.references)
    for twin in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert twin.trees_ is not model.trees_
        assert np.array_equal(twin.predict_proba(X), model.predict_proba(X))
