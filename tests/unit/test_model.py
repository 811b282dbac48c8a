"""ParcelRiskModel keeps scikit-learn's estimator contract where it applies to a fixed-label,
multi-output model: clone, get/set_params, fitted attributes, fitted and shape checks."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import (
    check_estimators_unfitted,
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)

from models.model import ParcelRiskModel
from models.records import CATEGORIES


def _data(n: int = 3000, f: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, f)).astype(np.float32)
    X[rng.random(n) < 0.1, 2] = np.nan  # missing values are values
    Y = np.stack([X[:, 0] > 1.5, X[:, 1] > 1.0, X[:, 0] + X[:, 1] > 2.0], axis=1).astype(int)
    return X, Y


@pytest.mark.parametrize(
    "check",
    [
        check_no_attributes_set_in_init,
        check_get_params_invariance,
        check_set_params,
        check_parameters_default_constructible,
        check_estimators_unfitted,
    ],
)
def test_scikit_learn_checks_that_apply(check) -> None:
    check("ParcelRiskModel", ParcelRiskModel())


def test_unfitted_model_refuses_to_score() -> None:
    with pytest.raises(NotFittedError):
        ParcelRiskModel().predict_proba(np.zeros((2, 6), dtype=np.float32))


def test_fit_sets_only_trailing_underscore_attributes_and_keeps_params() -> None:
    X, Y = _data()
    model = ParcelRiskModel(max_iter=30, min_samples_leaf=20)
    params = model.get_params()
    before = set(vars(model))
    model.fit(X, Y)
    added = set(vars(model)) - before
    assert added and all(a.endswith("_") and not a.startswith("_") for a in added)
    assert model.get_params() == params
    assert model.n_features_in_ == X.shape[1]
    assert model.labels == CATEGORIES


def test_clone_and_params_round_trip() -> None:
    X, Y = _data()
    model = ParcelRiskModel(max_iter=30, learning_rate=0.1, random_state=3).fit(X, Y)
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    assert not hasattr(copy, "estimators_")  # a clone is unfitted
    other = ParcelRiskModel().set_params(**model.get_params())
    assert other.get_params() == model.get_params()
    np.testing.assert_array_equal(copy.fit(X, Y).predict_proba(X), model.predict_proba(X))


def test_scores_need_the_fitted_feature_count() -> None:
    X, Y = _data()
    model = ParcelRiskModel(max_iter=30).fit(X, Y)
    with pytest.raises(ValueError, match="features"):
        model.predict_proba(X[:, :-1])
    scores = model.predict_proba(X[:5])
    assert scores.shape == (5, len(CATEGORIES)) and ((scores >= 0) & (scores <= 1)).all()
    assert model.predict_proba(X[:0]).shape == (0, len(CATEGORIES))
