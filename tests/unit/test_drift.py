"""Drift: bins, PSI, the sliding window, the reference in the artifact, and the gauges."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from models.drift import ALERT_PSI, Bins, Reference, Window, psi, reference_of
from models.features import FEATURES, INDEX
from models.registry import load
from models.scoring import Scored, Scorer
from streams.monitoring import DriftWatch

RNG = np.random.default_rng(0)


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_bins_are_equal_count_with_a_bin_for_missing_values() -> None:
    v = RNG.normal(size=10_000)
    v[:500] = np.nan
    b = Bins.fit(v)
    assert len(b.edges) == 9 and b.size == 11
    assert b.shares[-1] == pytest.approx(0.05)
    assert np.allclose(b.shares[:-1], 0.095, atol=0.002)
    assert b.counts(np.array([np.nan, -1e9, 1e9])).tolist() == [1] + [0] * 8 + [1, 1]


def test_few_distinct_values_get_one_bin_each_and_extra_edges_are_kept() -> None:
    b = Bins.fit(np.array([0.0, 1.0, 1.0, 1.0]))
    assert b.edges.tolist() == [0.5] and b.shares.tolist() == [0.25, 0.75, 0.0]
    s = Bins.fit(RNG.random(1000), extra_edges=(0.987, 0.999))
    assert {0.987, 0.999} <= set(s.edges.tolist())


def test_bins_round_trip_and_refuse_a_broken_reference() -> None:
    b = Bins.fit(RNG.normal(size=1000))
    again = Bins.from_dict(b.to_dict())
    assert np.array_equal(again.edges, b.edges) and np.array_equal(again.shares, b.shares)
    with pytest.raises(ValueError):
        Bins.from_dict({"edges": [1.0, 0.0], "shares": [0.2, 0.3, 0.5, 0.0]})


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    b = Bins.fit(RNG.normal(size=50_000))
    same = psi(b.shares, b.counts(RNG.normal(size=20_000)))
    shifted = psi(b.shares, b.counts(RNG.normal(loc=1.0, size=20_000)))
    assert same < 0.01 and shifted > ALERT_PSI
    assert math.isnan(psi(b.shares, np.zeros(b.size)))


def _reference() -> Reference:
    return Reference(
        {"fentanyl": Bins.fit(RNG.random(5000))},
        {"declared_value_usd": Bins.fit(RNG.lognormal(3.0, 1.0, 5000))},
    )


def _batch(n: int, value_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    X = np.full((n, len(FEATURES)), np.nan)
    X[:, INDEX["declared_value_usd"]] = RNG.lognormal(3.0, 1.0, n) * value_scale
    return RNG.random((n, 1)), X


def test_window_counts_slide_out_and_psi_waits_for_enough_parcels() -> None:
    w = Window(_reference(), window_s=60.0, slots=6)
    w.add(*_batch(400), now=1000.0)
    assert w.count(1000.0) == 400
    assert w.psi(1000.0, min_count=500) == {}
    w.add(*_batch(400, value_scale=0.1), now=1030.0)
    got = w.psi(1030.0, min_count=500)
    assert set(got) == {("score", "fentanyl"), ("feature", "declared_value_usd")}
    assert got[("score", "fentanyl")] < 0.05 < ALERT_PSI < got[("feature", "declared_value_usd")]
    assert w.count(1065.0) == 400  # the first batch's slot has left the window
    assert w.count(1100.0) == 0


def test_the_trained_artifact_stores_a_reference_that_matches_its_thresholds(
    model_dir: Path,
) -> None:
    art = load(model_dir)
    ref = reference_of(art.meta)
    assert ref is not None
    assert set(ref.scores) == set(art.thresholds)
    assert 1 <= len(ref.features) <= 8 and set(ref.features) <= set(FEATURES)
    for label, b in ref.scores.items():
        assert art.thresholds[label]["hold"] in b.edges
        assert b.shares.sum() == pytest.approx(1.0)


def _scorer(model_dir: Path, version: str, drop: str = "") -> Scorer:
    art = load(model_dir)
    meta = {k: v for k, v in art.meta.items() if k != drop}
    return Scorer(replace(art, version=version, meta=meta))


def test_watch_sets_gauges_per_version_and_drops_a_version_no_longer_served(
    model_dir: Path,
) -> None:
    watch = DriftWatch(window_s=600.0, min_count=100)
    scorer = _scorer(model_dir, "v-drift")
    ref = reference_of(scorer.artifact.meta)
    assert ref is not None
    X = np.zeros((200, len(FEATURES)))
    scores = np.zeros((200, len(ref.scores)))
    watch.observe(scorer, [Scored(X, scores, [None] * 200, [None] * 200)], now=100.0)
    watch.refresh(["v-drift"], now=101.0)
    assert sample("parcel_risk_drift_window_parcels", model_version="v-drift") == 200
    label = next(iter(ref.scores))
    feature = next(iter(ref.features))
    assert (sample("parcel_risk_score_psi", label=label, model_version="v-drift") or 0) > 0
    assert sample("parcel_risk_feature_psi", feature=feature, model_version="v-drift") is not None
    watch.refresh(["v-other"], now=102.0)
    assert sample("parcel_risk_score_psi", label=label, model_version="v-drift") is None
    assert "v-drift" not in watch.windows


def test_an_artifact_without_a_reference_is_served_without_drift_gauges(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    watch = DriftWatch(window_s=600.0, min_count=1)
    scorer = _scorer(model_dir, "v-old", drop="drift")  # as trained before
    X = np.zeros((5, len(FEATURES)))
    watch.observe(scorer, [Scored(X, np.zeros((5, 3)), [None] * 5, [None] * 5)], now=1.0)
    watch.refresh(["v-old"], now=2.0)
    assert "no drift reference" in caplog.text
    assert sample("parcel_risk_drift_window_parcels", model_version="v-old") is None
