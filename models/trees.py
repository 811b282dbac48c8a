"""One fitted gradient-boosting classifier's trees, predicted cheaply for a few rows.

scikit-learn's `HistGradientBoostingClassifier.predict_proba` costs about 3 ms a call
whatever the batch (its ColumnTransformer preprocessing, then one Python-level call per
tree); the worker scores batches of tens of parcels and explains a handful, so that fixed
cost was most of its model time. treelite's GTIL walks all the trees in one native call:
about 0.07 ms a call, but 2x slower per row than scikit-learn's Cython (measured in
benchmarks/RESULTS.md). `SmallBatches` answers batches up to `ROWS` with GTIL and larger
ones with scikit-learn, and the two agree to rounding (tests/unit/test_trees.py).

treelite 4.8 imports the trees with their categorical splits, with two differences that
`SmallBatches` removes:
- scikit-learn's OrdinalEncoder makes a category unseen in training a missing value; GTIL
  sees raw values, so unseen ones become NaN here first;
- a split's left set may name codes past a feature's known categories (codes the encoder
  never produces); treelite maps them to raw values by reading past the feature's list, so
  they are cleared from the copy it imports.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import treelite
import treelite.gtil
from sklearn.ensemble import HistGradientBoostingClassifier

# up to here GTIL is the faster (one thread, the three-label model: ~210 rows is even)
ROWS = 200


class SmallBatches:
    """`proba(X)`: the classifier's probability of the positive class, shape (n,)."""

    def __init__(self, clf: HistGradientBoostingClassifier) -> None:
        self.clf = clf
        pre = clf._preprocessor
        if pre is None:
            self.categorical: list[tuple[int, np.ndarray]] = []
        else:
            columns = np.flatnonzero(clf.is_categorical_)
            encoder = pre.named_transformers_["encoder"]
            self.categorical = [
                (int(c), np.asarray(cats, dtype=np.float64))
                for c, cats in zip(columns, encoder.categories_, strict=True)
            ]
        with warnings.catch_warnings():
            # treelite casts the known categories to int, NaN (a missing value) included;
            # a NaN never reaches a categorical split as a category, so the cast is harmless
            warnings.simplefilter("ignore", RuntimeWarning)
            self.trees = treelite.sklearn.import_model(_known_codes_only(clf))

    def proba(self, X: np.ndarray) -> np.ndarray:
        if len(X) > ROWS:
            return np.asarray(self.clf.predict_proba(X)[:, 1])
        rows = np.array(X, dtype=np.float64)  # a copy: unseen categories become NaN
        for c, known in self.categorical:
            col = rows[:, c]
            col[~np.isin(col, known)] = np.nan  # as scikit-learn's encoder does
        out = treelite.gtil.predict(self.trees, rows, nthread=1)
        return np.asarray(out, dtype=np.float64).reshape(len(rows), -1)[:, -1]


def _known_codes_only(clf: HistGradientBoostingClassifier) -> HistGradientBoostingClassifier:
    """A shallow copy of `clf` whose categorical splits name only known category codes:
    the same predictions on every encoded row, which holds known codes or NaN only. Each
    split gets a row of its own (scikit-learn may share one between splits)."""
    known, f_idx_map = clf._bin_mapper.make_known_categories_bitsets()
    out = copy.copy(clf)
    out._predictors = []
    for trees in clf._predictors:
        kept = []
        for tree in trees:
            tree = copy.copy(tree)
            nodes = tree.nodes.copy()
            splits = np.flatnonzero(nodes["is_categorical"] == 1)
            left = tree.raw_left_cat_bitsets[nodes["bitset_idx"][splits]]
            tree.raw_left_cat_bitsets = left & known[f_idx_map[nodes["feature_idx"][splits]]]
            nodes["bitset_idx"][splits] = np.arange(len(splits))
            tree.nodes = nodes
            kept.append(tree)
        out._predictors.append(kept)
    return out
