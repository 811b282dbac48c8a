"""Decisions and holds as their readers get them: pseudonymised, null for missing, exact scores."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from models import parcel
from models.features import INDEX
from models.outputs import Source, _feature_lists, decisions_and_holds, pseudonym
from models.pipeline import ScoreResult
from models.records import validate
from models.scoring import Scored
from streams.publishing import scored
from tests.samples import MANIFEST


def test_decision_and_hold_carry_what_their_readers_need() -> None:
    view = {"hawb": MANIFEST["hawb"], "manifest": validate("manifest", MANIFEST), "entry": None}
    features = np.full((1, len(INDEX)), 1 / 3, dtype=np.float32)
    value_at = INDEX["declared_value_usd"]
    nan_at = 0 if value_at else 1
    features[0, value_at] = 12.5
    features[0, nan_at] = np.nan
    scores = np.array([[0.123456789, 0.5, 0.25]])
    source = Source("parcels.manifest", 3, 42, b"k").as_dict()
    (decision,), (hold,) = decisions_and_holds(
        [view], [source], [1], Scored(features, scores, ["hold"], ["fentanyl"]),
        {0: ["value per kg far below its HS heading"]}, "v1", b"secret",
    )  # fmt: skip
    assert decision["source"] == {"topic": "parcels.manifest", "partition": 3, "offset": 42}
    assert decision["scores"]["fentanyl"] == 0.123456789  # exact: thresholds compare on it
    assert decision["declared_value_usd"] == 12.5
    assert decision["features"][nan_at] is None
    rest = {x for i, x in enumerate(decision["features"]) if i not in (nan_at, value_at)}
    assert rest == {0.333333}
    # the shipper's pseudonym is its history key's: decisions group as the worker does
    shipper_key, _ = parcel.keys(view)
    assert decision["shipper_id"] == pseudonym(b"secret", shipper_key)
    assert decision["shipper_id"] != pseudonym(b"other key", shipper_key)
    assert hold["reasons"] == ["value per kg far below its HS heading"]
    assert hold["shipper"]["name"] == MANIFEST["shipper"]["name"]

    out = scored(ScoreResult([decision], [hold], [(0, "fentanyl", "hold")], [0.0]))
    assert [(o.output, o.key) for o in out] == [
        ("decisions", b"HX12345678"),
        ("holds", b"HX12345678"),
        ("holds.fentanyl", b"HX12345678"),
    ]
    raw = out[0].value.decode()
    assert MANIFEST["shipper"]["name"] not in raw and MANIFEST["consignee"]["address"] not in raw
    assert orjson.loads(out[0].value) == decision
    assert out[2].value == out[1].value and orjson.loads(out[1].value) == hold


def test_feature_values_are_rounded_as_pythons_round_does() -> None:
    """numpy's round of float32 features gives Python's correctly rounded round(), bit for
    bit: random float32 values of every magnitude and exact ties (j / 128 at 6 decimals)."""
    rng = np.random.default_rng(3)
    X = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    X = np.concatenate([X[np.isfinite(X)], np.arange(-5_000, 5_000) / np.float32(128)])
    X = X[: len(X) // 50 * 50].reshape(-1, 50).astype(np.float32)
    got = np.array(_feature_lists(X), dtype=np.float64)
    expected = np.array([[round(v, 6) for v in row] for row in X.astype(np.float64).tolist()])
    assert (got.view(np.int64) == expected.view(np.int64)).all()
    with pytest.raises(TypeError):
        _feature_lists(X.astype(np.float64))
