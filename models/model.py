"""The risk model: one calibrated gradient-boosting classifier per risk label.

A scikit-learn estimator (parameters in the constructor and untouched by `fit`, fitted
attributes ending in `_`, `fit` / `predict_proba`), so `clone`, `get_params` and skops work
on it as on any estimator. Rows must be given in time order: the last
`calibration_fraction` of them calibrates the probabilities (isotonic), so calibration is
measured on later data than the trees were fitted on, as in production.

Predictions go through `models.trees.SmallBatches` (`trees_`): the worker's batches of a
few parcels cost a tenth of scikit-learn's fixed cost per call. They are a native copy of
the fitted trees, so they are not saved but rebuilt when a model is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.isotonic import IsotonicRegression
from sklearn.utils.validation import check_is_fitted, validate_data

from models.records import CATEGORIES
from models.trees import SmallBatches


class ParcelRiskModel(BaseEstimator):
    """Multi-label risk scorer: `predict_proba(X)` is (n_samples, n_labels) probabilities."""

    def __init__(
        self,
        labels: Sequence[str] = CATEGORIES,
        categorical_features: Sequence[int] = (),
        max_iter: int = 300,
        learning_rate: float = 0.06,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 50,
        l2_regularization: float = 1.0,
        calibration_fraction: float = 0.2,
        random_state: int = 0,
    ) -> None:
        self.labels = labels
        self.categorical_features = categorical_features
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.calibration_fraction = calibration_fraction
        self.random_state = random_state

    def fit(self, X: np.ndarray, Y: np.ndarray) -> ParcelRiskModel:
        """X: (n, n_features) in time order; Y: (n, n_labels) of 0/1."""
        X = validate_data(self, X, ensure_all_finite=False)  # NaN is a missing value
        Y = np.asarray(Y)
        if Y.ndim != 2 or Y.shape[1] != len(self.labels):
            raise ValueError(f"Y must have one column per label {tuple(self.labels)}")
        # a feature never seen in training (e.g. an optional field nobody sent) is constant
        self.all_missing_ = np.isnan(X).all(axis=0)
        X = self._fill(X)
        cut = int(len(X) * (1.0 - self.calibration_fraction))
        self.estimators_: list[HistGradientBoostingClassifier | None] = []
        self.calibrators_: list[IsotonicRegression | None] = []
        for j in range(Y.shape[1]):
            if len(np.unique(Y[:cut, j])) < 2:  # a label the data never shows: score 0
                self.estimators_.append(None)
                self.calibrators_.append(None)
                continue
            clf = HistGradientBoostingClassifier(
                max_iter=self.max_iter,
                learning_rate=self.learning_rate,
                max_leaf_nodes=self.max_leaf_nodes,
                min_samples_leaf=self.min_samples_leaf,
                l2_regularization=self.l2_regularization,
                categorical_features=list(self.categorical_features) or None,
                early_stopping=True,
                validation_fraction=0.1,
                n_iter_no_change=20,
                scoring="loss",
                random_state=self.random_state,
            )
            clf.fit(X[:cut], Y[:cut, j])
            raw = clf.predict_proba(X[cut:])[:, 1]
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
            iso.fit(raw, Y[cut:, j])
            self.estimators_.append(clf)
            self.calibrators_.append(iso)
        self.trees_ = _small_batches(self.estimators_)
        return self

    def __getstate__(self) -> dict:
        """What is saved (skops, pickle, deepcopy): all but the trees' native copy."""
        state = dict(super().__getstate__())
        state.pop("trees_", None)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "estimators_" in state:
            self.trees_ = _small_batches(self.estimators_)

    def _fill(self, X: np.ndarray) -> np.ndarray:
        if not self.all_missing_.any():
            return X
        X = X.copy()
        X[:, self.all_missing_] = 0.0
        return X

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, n_labels) calibrated probabilities; NotFittedError before `fit`, ValueError
        for rows with another feature count than the model was fitted on."""
        X = self._checked(X)
        out = np.zeros((len(X), len(self.estimators_)), dtype=np.float64)
        for j in range(len(self.estimators_)):
            out[:, j] = self._calibrated(X, j)
        return out

    def predict_label(self, X: np.ndarray, j: int) -> np.ndarray:
        """(n,) calibrated probabilities of label `j` alone: only its trees run (a reason
        explains one category)."""
        return self._calibrated(self._checked(X), j)

    def _checked(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, ensure_all_finite=False, ensure_min_samples=0)
        return self._fill(X)

    def _calibrated(self, X: np.ndarray, j: int) -> np.ndarray:
        trees, iso = self.trees_[j], self.calibrators_[j]
        if trees is None or iso is None or not len(X):
            return np.zeros(len(X))  # a label training never showed, or an empty batch
        raw = trees.proba(X)
        # isotonic steps tie many parcels; a sliver of the raw score keeps the ranking
        return np.asarray(np.clip(iso.predict(raw) + 1e-6 * raw, 0.0, 1.0))


def _small_batches(
    estimators: Sequence[HistGradientBoostingClassifier | None],
) -> list[SmallBatches | None]:
    return [None if clf is None else SmallBatches(clf) for clf in estimators]
