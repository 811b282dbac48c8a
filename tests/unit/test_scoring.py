"""Scoring decisions, plain-word reasons, and the registry's refusal of bad artifacts."""

from __future__ import annotations

import math
import shutil

import numpy as np
import orjson
import pytest
import skops.io as sio
from threadpoolctl import threadpool_info, threadpool_limits

from models.features import References, build_features
from models.parcel import keys
from models.reasons import describe
from models.records import validate
from models.registry import ArtifactError, load, versions
from models.scoring import Scorer, decide
from streams.serving import limit_model_threads
from streams.settings import Settings
from tests.samples import ENTRY, MANIFEST

THRESHOLDS = {
    "fentanyl": {"hold": 0.2, "review": 0.05},
    "counterfeit": {"hold": 0.6, "review": 0.3},
    "undervaluation": {"hold": 0.7, "review": 0.5},
}


def test_decide_picks_the_label_furthest_above_its_threshold() -> None:
    scores = np.array(
        [
            [0.01, 0.10, 0.10],  # nothing
            [0.06, 0.10, 0.10],  # fentanyl review
            [0.30, 0.65, 0.10],  # both hold; fentanyl is 1.5x its threshold, counterfeit 1.08x
            [0.01, 0.40, 0.75],  # undervaluation hold beats a counterfeit review
        ]
    )
    actions, cats = decide(scores, THRESHOLDS)
    assert actions == [None, "review", "hold", "hold"]
    assert cats == [None, "fentanyl", "fentanyl", "undervaluation"]


def test_value_per_kg_reason_in_plain_words() -> None:
    m = validate("manifest", {**MANIFEST, "declared_value": 4.1, "weight_kg": 1.0})
    view = {"hawb": "HX1", "manifest": m, "entry": None}
    refs = References(heading_log_vpk={"6404": math.log(123.0)})
    row = build_features([view], refs)[0]
    text = describe("value_per_kg_vs_hs_median", row, view, refs)
    assert text == "declared $4.10/kg, 30x below the median for HS 6404, footwear"


def test_mismatch_reason_names_both_values() -> None:
    m = validate("manifest", {**MANIFEST, "declared_value": 640.0})
    e = validate("entry", {**ENTRY, "lines": [{**ENTRY["lines"][0], "value_usd": 95.0}]})
    view = {"hawb": "HX1", "manifest": m, "entry": e}
    row = build_features([view], References())[0]
    assert (
        describe("entry_to_manifest_value_ratio", row, view, References())
        == "manifest says $640.00, entry says $95.00"
    )


def test_flagged_parcels_get_reasons_from_the_real_model(model_dir) -> None:
    scorer = Scorer(load(model_dir))
    m = validate(
        "manifest",
        {
            **MANIFEST,
            "description": "herbal candy",
            "hts": "170490",
            "declared_value": 3.0,
            "weight_kg": 0.4,
        },
    )
    views = [{"hawb": f"H{i}", "manifest": m, "entry": None} for i in range(3)]
    # force a review so the reasons path runs whatever this parcel scores
    scorer.thresholds = {c: {"hold": 2.0, "review": 1e-9} for c in THRESHOLDS}  # never a hold
    scored = scorer.score(views)
    assert scored.actions == ["review"] * 3
    reasons = scorer.reasons(views, scored)
    assert set(reasons) == {0, 1, 2}
    assert all(r and all(isinstance(x, str) and x for x in r) for r in reasons.values())


def _copy(model_dir, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    return folder, versions(folder)[0]


def test_tampered_artifact_refused(model_dir, tmp_path) -> None:
    folder, v = _copy(model_dir, tmp_path)
    blob = folder / v / "model.skops"
    blob.write_bytes(blob.read_bytes() + b"\0")
    with pytest.raises(ArtifactError, match="checksum"):
        load(folder, v)


def test_incompatible_features_refused(model_dir, tmp_path) -> None:
    folder, v = _copy(model_dir, tmp_path)
    meta = orjson.loads((folder / v / "meta.json").read_bytes())
    meta["features"] = meta["features"][:-1]
    (folder / v / "meta.json").write_bytes(orjson.dumps(meta))
    with pytest.raises(ArtifactError, match="other features"):
        load(folder, v)


def test_untrusted_types_refused_even_with_a_matching_checksum(model_dir, tmp_path) -> None:
    import hashlib

    from sklearn.preprocessing import FunctionTransformer

    folder, v = _copy(model_dir, tmp_path)
    evil = sio.dumps(FunctionTransformer(func=shutil.rmtree))
    (folder / v / "model.skops").write_bytes(evil)
    meta = orjson.loads((folder / v / "meta.json").read_bytes())
    meta["model_sha256"] = hashlib.sha256(evil).hexdigest()
    (folder / v / "meta.json").write_bytes(orjson.dumps(meta))
    with pytest.raises(ArtifactError, match="untrusted types"):
        load(folder, v)


def test_hold_cap_turns_extra_model_holds_into_reviews(model_dir) -> None:
    from models.pipeline import score_batch
    from models.rules import HoldCap, parse

    scorer = Scorer(load(model_dir))
    scorer.thresholds = {c: {"hold": 1e-9, "review": 1e-9} for c in THRESHOLDS}  # all hold
    m = validate("manifest", MANIFEST)
    shipper_key, consignee_key = keys({"hawb": "H0", "manifest": m, "entry": None})
    parcels = [
        {
            "view": {"hawb": f"H{i}", "manifest": m, "entry": None},
            "shipper_key": shipper_key,  # as the join stage names them
            "consignee_key": consignee_key,
            "revision": 1,
            "event_epoch": 3600.0 * 10,
            "source": {"topic": "t", "partition": 0, "offset": i},
        }
        for i in range(4)
    ]
    rules = parse(
        '[[rule]]\nname = "all"\naction = "hold"\ncategory = "fentanyl"\n'
        'when = "has_manifest == 1"\n'
    )
    res = score_batch(parcels, scorer, b"k", None, HoldCap(1))
    assert [a for _i, _c, a in res.flagged] == ["hold", "review", "review", "review"]
    forced = score_batch(parcels, scorer, b"k", rules, HoldCap(1))
    assert [a for _i, _c, a in forced.flagged] == ["hold"] * 4  # rules are not capped


def test_model_threads_are_capped_and_scores_unchanged(model_dir) -> None:
    scorer = Scorer(load(model_dir))
    views = [{"hawb": "H1", "manifest": validate("manifest", MANIFEST), "entry": None}]
    with threadpool_limits(limits=None):  # restores the process's limits afterwards
        before = scorer.score(views).scores
        limit_model_threads(1)
        openmp = [p for p in threadpool_info() if p["user_api"] == "openmp"]
        assert openmp and all(p["num_threads"] == 1 for p in openmp)
        np.testing.assert_array_equal(scorer.score(views).scores, before)


def test_model_threads_below_one_refused() -> None:
    with pytest.raises(ValueError, match="PARCEL_RISK_MODEL_THREADS"):
        Settings(model_threads=0).check()


def _message(view: dict, offset: int, revision: int = 1) -> dict:
    """A parcel message as the shipper stage hands it to scoring."""
    shipper_key, consignee_key = keys(view)
    return {
        "view": view,
        "shipper_key": shipper_key,
        "consignee_key": consignee_key,
        "revision": revision,
        "event_epoch": 3600.0 * 10,
        "source": {"topic": "t", "partition": 0, "offset": offset},
    }


def test_the_compliance_sample_is_examined_whatever_the_score(model_dir) -> None:
    from models.pipeline import SAMPLE_RULE, score_batch
    from models.rules import parse
    from models.sampling import Sampler

    scorer = Scorer(load(model_dir))
    scorer.thresholds = {c: {"hold": 2.0, "review": 2.0} for c in THRESHOLDS}  # none flagged
    m, e = validate("manifest", MANIFEST), validate("entry", ENTRY)
    parcels = [
        _message({"hawb": "H1", "manifest": m, "entry": e}, offset=1, revision=2),
        _message({"hawb": "H2", "manifest": m, "entry": None}, offset=2),  # no filer: no sample
    ]
    everything = parse("[sampling]\nshare = 1.0\n")
    res = score_batch(parcels, scorer, b"k", everything, sampler=Sampler(b"k"))
    assert [(i, a) for i, _c, a in res.flagged] == [(0, "sample")]
    (hold,) = res.holds
    assert hold["rules"] == [SAMPLE_RULE] and hold["reasons"][0].startswith("compliance sample")
    assert "filer AB1" in hold["reasons"][0]
    assert [d["sample_rate"] for d in res.decisions] == [1.0, None]
    scorer.thresholds = {c: {"hold": 1e-9, "review": 1e-9} for c in THRESHOLDS}
    held = score_batch(parcels, scorer, b"k", everything, sampler=Sampler(b"k"))
    assert [a for _i, _c, a in held.flagged] == ["hold", "hold"]  # a hold stays a hold
    assert SAMPLE_RULE in held.holds[0]["rules"] and SAMPLE_RULE not in held.holds[1]["rules"]
    none = score_batch(
        parcels, scorer, b"k", parse("[sampling]\nshare = 0\n"), sampler=Sampler(b"k")
    )
    assert all(d["sample_rate"] is None for d in none.decisions)


TRUST = """
[trust]
factor = 4.0
[[trusted]]
name = "known-importer"
importers = ["55 Elm Street|73301"]
from = "2025-01-01"
until = "2025-12-31"
[[rule]]
name = "watch-joy"
action = "hold"
category = "counterfeit"
shippers = ["Shenzhen Joy Trading Co Ltd|CN"]
"""


def test_trust_raises_the_hold_threshold_and_never_overrides_rules(model_dir) -> None:
    from models.pipeline import score_batch
    from models.rules import parse

    scorer = Scorer(load(model_dir))
    m = validate("manifest", MANIFEST)
    parcel = _message({"hawb": "H1", "manifest": m, "entry": None}, offset=1)
    score = float(scorer.score([parcel["view"]]).scores.max())
    trusted = parse(TRUST.split("[[rule]]")[0])

    def decided(hold: float, rules=trusted) -> tuple[str | None, str | None]:
        scorer.thresholds = {c: {"hold": hold, "review": 2.0} for c in THRESHOLDS}
        res = score_batch([parcel], scorer, b"k", rules)
        return res.decisions[0]["action"], res.decisions[0]["trusted"]

    assert decided(score / 5) == ("hold", "known-importer")  # above 4x the threshold
    assert decided(score / 3) == (None, "known-importer")  # held without trust, not with it
    assert decided(score / 3, None) == ("hold", None)
    watched = parse(TRUST)
    scorer.thresholds = {c: {"hold": score / 3, "review": 2.0} for c in THRESHOLDS}
    res = score_batch([parcel], scorer, b"k", watched)
    assert res.decisions[0]["action"] == "hold" and "watch-joy" in res.decisions[0]["rules"]
    assert any("trusted party 'known-importer'" in r for r in res.holds[0]["reasons"])
    later = {**m, "event_time": "2026-03-01T10:00:00+00:00"}  # trust has ended
    assert parse(TRUST).trust({"hawb": "H1", "manifest": later, "entry": None}) is None
