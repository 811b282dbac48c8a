"""Parcel facts: one definition each, and every user of a fact gets the same answer."""

from __future__ import annotations

import copy
import math

import numpy as np
import orjson
import pytest

from models import history, parcel
from models.features import INDEX, References, build_features
from models.outputs import Source
from models.parcel import ParcelView
from models.pipeline import Incoming, consignee_batch, join_batch, shipper_batch
from models.records import validate
from models.rules import parse
from tests.samples import ENTRY, MANIFEST


def _view(manifest: dict | None = MANIFEST, entry: dict | None = ENTRY) -> ParcelView:
    return ParcelView(
        hawb=MANIFEST["hawb"],
        manifest=validate("manifest", manifest) if manifest else None,
        entry=validate("entry", entry) if entry else None,
    )


def _renamed_entry(**shipper: str) -> dict:
    entry = copy.deepcopy(ENTRY)
    entry["shipper"] = {**entry["shipper"], **shipper}
    return entry


def test_the_entry_speaks_for_the_parcel_once_filed() -> None:
    entry = _renamed_entry(name="Guangzhou Star Ltd", country="HK")
    both, manifest_only = _view(entry=entry), _view(entry=None)
    assert parcel.primary(both) is both["entry"]
    assert parcel.primary(manifest_only) is manifest_only["manifest"]
    assert parcel.keys(both)[0] == "guangzhou star|HK"
    assert parcel.event_time(both) == ENTRY["event_time"]
    # the features, the rules and the history all read the same party
    X = build_features([both], References())
    assert X[0, INDEX["origin"]] == 1.0  # HK
    rules = parse(
        '[[rule]]\nname = "w"\naction = "review"\ncategory = "counterfeit"\n'
        'shippers = ["GUANGZHOU STAR LIMITED|hk"]\n'
    )
    assert [m.rule for m in rules.evaluate(both, X[0])] == ["w"]
    assert rules.evaluate(manifest_only, X[0]) == []


def test_value_in_usd_converts_a_manifest_currency_everywhere() -> None:
    eur = {**MANIFEST, "declared_value": 100.0, "currency": "EUR"}
    view = _view(manifest=eur, entry=None)
    assert parcel.value_usd(view) == 100.0 * parcel.USD_PER["EUR"]
    assert math.isnan(parcel.value_usd(_view(manifest={**eur, "currency": "XYZ"}, entry=None)))
    X = build_features([view], References())
    assert X[0, INDEX["declared_value_usd"]] == np.float32(108.0)
    state = history.observe_shipper_parcel(None, view, "c|1", 0.0)
    assert state["value_sum"] == 108.0  # the shipper's mean is in USD too, not in euros
    assert parcel.value_usd(_view()) == 24.5  # the entry's value, once filed


def test_vague_is_one_test_for_features_and_history() -> None:
    vague_lines = copy.deepcopy(ENTRY)
    vague_lines["lines"] = [
        {**ENTRY["lines"][0], "description": "running shoes"},
        {**ENTRY["lines"][0], "description": "gift"},
    ]
    cases = {
        "gift": True,
        "gifts, samples": True,  # commas split words
        "daily necessities": True,
        "running shoes": False,
        "gift box with four scented candles": False,  # long enough to say what it is
    }
    for text, expected in cases.items():
        view = _view(manifest={**MANIFEST, "description": text}, entry=None)
        assert parcel.vague(parcel.description(view)) is expected, text
        X = build_features([view], References())
        assert X[0, INDEX["desc_vague"]] == float(expected), text
        state = history.observe_shipper_parcel(None, view, "c|1", 0.0)
        assert state["vague"] == int(expected), text
    # an entry's description is all its lines (each once), not its first line
    view = _view(entry=vague_lines)
    assert parcel.description(view) == "running shoes, gift"
    assert parcel.vague(parcel.description(view))


def test_shipper_vague_share_counts_what_desc_vague_flags() -> None:
    """Through the stages: the history's share and the feature say the same of a parcel."""
    bills: dict = {}
    consignees: dict = {}
    shippers: dict = {}
    records = [
        {**MANIFEST, "hawb": "HV1", "description": "misc, goods"},
        {**MANIFEST, "hawb": "HV2", "description": "running shoes"},
        {**MANIFEST, "hawb": "HV3", "event_time": "2025-03-02T10:00:00+00:00"},
    ]
    batch = [
        Incoming("manifest", Source("parcels.manifest", 0, i, r["hawb"].encode()), orjson.dumps(r))
        for i, r in enumerate(records)
    ]
    forward = join_batch(batch, bills, 1 << 20).forward
    staged = consignee_batch([m for _, m in forward], consignees)
    parcels = shipper_batch([m for _, m in staged], shippers)
    X = build_features([p["view"] for p in parcels], References())
    assert list(X[:2, INDEX["desc_vague"]]) == [1.0, 0.0]
    assert X[2, INDEX["shipper_vague_share"]] == 0.5


def test_company_words_make_a_business_and_leave_the_shipper_key() -> None:
    assert parcel.is_business("Shenzhen Joy Trading Co., Ltd.")
    assert parcel.is_business("ACME E-Commerce")
    assert not parcel.is_business("Maria Lopez")
    assert not parcel.is_business("John E. Smith")
    a = parcel.shipper_key("Shenzhen JOY Trading Co., Ltd.", "cn")
    assert a == parcel.shipper_key("shenzhen joy", "CN") == "shenzhen joy|CN"
    assert a != parcel.shipper_key("shenzhen joy", "HK")
    assert parcel.shipper_key("Trading Co Ltd", "CN") == "trading co ltd|CN"  # nothing left
    assert parcel.consignee_key("55 Elm Street, Apt 4", "73301-1234") == parcel.consignee_key(
        "55 elm st apt 4", "73301"
    )


def test_a_view_without_records_is_refused() -> None:
    with pytest.raises(ValueError, match="H1"):
        parcel.primary(ParcelView(hawb="H1", manifest=None, entry=None))
