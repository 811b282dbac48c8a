"""Features: one function, NaN for what is missing, mismatch and reference signals."""

from __future__ import annotations

import copy
import math

import numpy as np

from models.features import FEATURES, INDEX, References, build_features
from models.parcel import ParcelView
from models.records import validate
from tests.samples import ENTRY, MANIFEST


def _view(manifest: dict | None = MANIFEST, entry: dict | None = ENTRY) -> ParcelView:
    return ParcelView(
        hawb="HX12345678",
        manifest=validate("manifest", manifest) if manifest else None,
        entry=validate("entry", entry) if entry else None,
    )


def _f(X: np.ndarray, name: str, row: int = 0) -> float:
    return float(X[row, INDEX[name]])


REFS = References(heading_log_vpk={"6404": math.log(300.0)}, global_log_vpk=math.log(50.0))


def test_shape_dtype_and_names() -> None:
    X = build_features([_view(), _view(entry=None)], REFS)
    assert X.shape == (2, len(FEATURES))
    assert X.dtype == np.float32
    assert len(set(FEATURES)) == len(FEATURES)


def test_manifest_only_has_missing_entry_features_not_errors() -> None:
    X = build_features([_view(entry=None)], REFS)
    assert _f(X, "has_entry") == 0.0
    for name in ("entry_value_usd", "entry_to_manifest_value_ratio", "n_lines", "entry_type"):
        assert math.isnan(_f(X, name)), name
    assert _f(X, "declared_value_usd") == 24.5


def test_entry_only_still_scores() -> None:
    X = build_features([_view(manifest=None)], REFS)
    assert _f(X, "has_manifest") == 0.0
    assert math.isnan(_f(X, "weight_kg"))
    assert _f(X, "declared_value_usd") == 24.5


def test_value_mismatch_between_manifest_and_entry() -> None:
    entry = copy.deepcopy(ENTRY)
    entry["lines"][0]["value_usd"] = 6.0
    X = build_features([_view(entry=entry)], REFS)
    assert _f(X, "entry_to_manifest_value_ratio") == np.float32(6.0 / 24.5)
    assert _f(X, "declared_value_usd") == 6.0  # the entry's value is what is declared to CBP


def test_value_per_kg_against_the_heading_median() -> None:
    X = build_features([_view()], REFS)
    # $24.50 for 0.8 kg against a $300/kg median for 6404: about 12x below
    assert _f(X, "value_per_kg_vs_hs_median") == np.float32(math.log(24.5 / 0.8 / 300.0))
    assert _f(X, "hs_heading") == 6404
    assert _f(X, "hs_risk_group") == 1  # footwear: counterfeit-prone


def test_description_signals() -> None:
    m = {**MANIFEST, "description": "gift"}
    X = build_features([_view(manifest=m, entry=None)], REFS)
    assert _f(X, "desc_vague") == 1.0
    m = {**MANIFEST, "description": "herbal candy"}
    X = build_features([_view(manifest=m, entry=None)], REFS)
    assert _f(X, "desc_cover_phrase") == 1.0
    assert _f(X, "desc_hs_overlap") == 0.0  # candy is not footwear


def test_references_learned_from_data() -> None:
    views = [_view() for _ in range(30)]
    refs = References.fit(views)
    assert math.isclose(refs.heading_log_vpk["6404"], math.log(24.5 / 0.8), rel_tol=1e-6)
    assert References.from_dict(refs.to_dict()) == refs


def test_history_features_pass_through() -> None:
    v = _view()
    v["shipper_history"] = {"parcels": 12.0, "seized_narcotics": 1.0}
    X = build_features([v], REFS)
    assert _f(X, "shipper_parcels") == 12.0
    assert _f(X, "shipper_seized_narcotics") == 1.0
    assert math.isnan(_f(X, "shipper_vague_share"))
