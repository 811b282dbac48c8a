"""Outcomes: exams of holds counted by category and model, and the precision to expect."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prometheus_client import REGISTRY

from models.pipeline import Exam
from models.records import CATEGORIES
from models.registry import load
from models.training import hold_precision
from streams import metrics


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_exams_count_examined_seizures_and_hits_per_category_and_model() -> None:
    metrics.count_exams(
        [
            Exam("counterfeit", "m-out", "seized_ipr"),
            Exam("counterfeit", "m-out", "seized_narcotics"),  # a seizure, not its own finding
            Exam("counterfeit", "m-out", "released"),
            Exam("fentanyl", "m-out2", "seized_narcotics"),
        ]
    )
    c = {"category": "counterfeit", "model_version": "m-out"}
    assert sample("parcel_risk_examined_holds_total", **c) == 3
    assert sample("parcel_risk_hold_seizures_total", **c) == 2
    assert sample("parcel_risk_hold_hits_total", **c) == 1
    f = {"category": "fentanyl", "model_version": "m-out2"}
    assert sample("parcel_risk_hold_hits_total", **f) == 1


def test_hold_precision_is_the_label_share_above_the_hold_threshold() -> None:
    scores = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.1, 0.9, 0.0]])
    Y = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0]])
    t = {c: {"hold": 0.5, "review": 0.3} for c in CATEGORIES}
    assert hold_precision(Y, scores, t, CATEGORIES) == {
        "fentanyl": 0.5,
        "counterfeit": 1.0,
        "undervaluation": None,
    }


def test_a_served_model_shows_its_validation_precision_and_keeps_it(model_dir: Path) -> None:
    art = load(model_dir)
    expected = art.meta["validation_precision"]
    assert set(expected) == set(CATEGORIES)
    metrics.show_model(art.version, art.meta)
    for category, precision in expected.items():
        got = REGISTRY.get_sample_value(
            "parcel_risk_validation_precision",
            {"category": category, "model_version": art.version},
        )
        assert got == precision
    metrics.show_model("m-older", {})  # trained before it was stored: nothing to show
    assert sample("parcel_risk_model_info", version="m-older") == 1
