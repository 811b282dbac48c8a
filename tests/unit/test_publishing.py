"""Decisions and holds as their readers get them: pseudonymised, null for missing, exact scores."""

from __future__ import annotations

import numpy as np
import orjson

from models.features import INDEX
from models.records import validate
from models.scoring import Scored
from streams.publishing import Source, decisions_and_holds
from tests.samples import MANIFEST


def test_decision_and_hold_carry_what_their_readers_need() -> None:
    view = {"hawb": MANIFEST["hawb"], "manifest": validate("manifest", MANIFEST), "entry": None}
    features = np.full((1, len(INDEX)), 1 / 3, dtype=np.float32)
    value_at = INDEX["declared_value_usd"]
    nan_at = 0 if value_at else 1
    features[0, value_at] = 12.5
    features[0, nan_at] = np.nan
    scores = np.array([[0.123456789, 0.5, 0.25]])
    scored = Scored(features, scores, ["hold"], ["fentanyl"])
    out = decisions_and_holds(
        [view], [Source("parcels.manifest", 3, 42, b"k")], [1], scored,
        {0: ["value per kg far below its HS heading"]}, "v1", b"secret",
    )  # fmt: skip
    assert [o.output for o in out] == ["decisions", "holds", "holds.fentanyl"]
    decision = orjson.loads(out[0].value)
    assert decision["source"] == {"topic": "parcels.manifest", "partition": 3, "offset": 42}
    assert decision["scores"]["fentanyl"] == 0.123456789  # exact: thresholds compare on it
    assert decision["declared_value_usd"] == 12.5
    assert decision["features"][nan_at] is None
    rest = {x for i, x in enumerate(decision["features"]) if i not in (nan_at, value_at)}
    assert rest == {0.333333}
    raw = out[0].value.decode()
    assert MANIFEST["shipper"]["name"] not in raw and MANIFEST["consignee"]["address"] not in raw
    hold = orjson.loads(out[1].value)
    assert hold["reasons"] == ["value per kg far below its HS heading"]
    assert hold["shipper"]["name"] == MANIFEST["shipper"]["name"]
    assert out[2].value == out[1].value
