"""Evaluating exported decisions (served feature vectors), as `parcel-risk evaluate` does."""

from __future__ import annotations

import csv
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from models.dataset import from_generator, labelled_rows, read_jsonl, write_jsonl
from models.drift import ALERT_PSI, reference_of
from models.evaluation import evaluate_model, period_drift
from models.features import INDEX, build_features
from models.outputs import Source
from models.pipeline import Incoming, consignee_batch, join_batch, score_batch, shipper_batch
from models.records import CATEGORIES, MAX_RECORD_BYTES
from models.registry import load, versions
from models.report import drift_section
from models.rules import RuleSet, parse
from models.sampling import Sampler
from models.scoring import Scorer
from models.synthetic import GeneratorConfig, TrafficGenerator
from streams.cli import main


def _exported(model_dir: Path, path: Path, rules: RuleSet | None = None) -> list[dict]:
    """Synthetic traffic through the worker's stages and model, exported as `export` does:
    decisions joined with dispositions, one row per revision."""
    gen = TrafficGenerator(GeneratorConfig(seed=11))
    batch = [
        Incoming(ev.kind, Source(f"parcels.{ev.kind}", 0, n, ev.key.encode()), ev.value)
        for n, ev in enumerate(gen.events(1500))
    ]
    joined = join_batch(batch, {}, MAX_RECORD_BYTES)
    assert not joined.dead
    staged = consignee_batch([m for _, m in joined.forward], {})
    parcels = shipper_batch([m for _, m in staged], {})
    scorer = Scorer(load(model_dir))
    decisions = score_batch(parcels, scorer, b"key", rules, sampler=Sampler(b"key")).decisions
    seized = [
        {"hawb": lab.hawb, "outcome": "seized_ipr"} for lab in gen.labels() if lab.counterfeit
    ]
    rows = list(labelled_rows(list(decisions), seized))
    write_jsonl(rows, path)
    return rows


def test_exported_decisions_evaluate_one_row_per_bill(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = tmp_path / "export.jsonl"
    rows = _exported(model_dir, data)
    bills = {r["hawb"] for r in rows}
    assert len(rows) > len(bills)  # rescored bills: more revisions than bills
    ds = read_jsonl(data)
    result = evaluate_model(load(model_dir), ds)
    assert len(result.data) == len(bills) == result.scores.shape[0]
    assert result.data.X is not None and result.data.X.shape == (len(bills), ds.X.shape[1])
    assert result.data.model_versions == [rows[0]["model_version"]] * len(bills)
    final = np.flatnonzero(ds.final)
    np.testing.assert_array_equal(result.data.X, ds.X[final])  # the served vectors, as served
    assert result.metrics["counterfeit"]["positives"] > 0

    (version,) = versions(model_dir)
    report = tmp_path / "report"
    args = ["--model-dir", str(model_dir), "evaluate", "--model", version, "--data", str(data)]
    scores = tmp_path / "scores.csv"
    assert main([*args, "--out", str(report), "--scores-out", str(scores)]) == 0
    assert f"({len(bills):,} rows)" in (report / "report.md").read_text()
    console = capsys.readouterr().err
    for cell in ("@1%", "@2%", "@5%", "@10%", "Rev", "base"):
        assert cell in console
    with scores.open(newline="") as f:
        per_row = list(csv.DictReader(f))
    assert list(per_row[0]) == ["id", "time", *CATEGORIES, "action", "category"]
    assert [r["id"] for r in per_row] == result.data.ids
    assert float(per_row[0]["counterfeit"]) == pytest.approx(result.scores[0, 1])
    assert {r["action"] for r in per_row} <= {"", "hold", "review", "sample"}
    assert datetime.fromisoformat(per_row[0]["time"]).tzinfo is not None
    parquet = tmp_path / "scores.parquet"
    assert main([*args, "--out", str(report), "--scores-out", str(parquet)]) == 0
    assert pq.read_table(parquet).column("id").to_pylist() == result.data.ids


def test_export_marks_the_compliance_sample_and_evaluate_estimates_on_it(
    model_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "export.jsonl"
    rows = _exported(model_dir, data, parse("[sampling]\nshare = 0.3\n"))
    sampled = [r for r in rows if r["final"] and r["sample_rate"] is not None]
    assert 0.2 < len(sampled) / sum(r["final"] for r in rows) < 0.35  # parcels with an entry
    result = evaluate_model(load(model_dir), read_jsonl(data))
    assert result.sampled is not None
    fake = result.sampled["counterfeit"]
    assert fake["sampled"] == len(sampled) and fake["low"] <= fake["rate"] <= fake["high"]
    assert 0 <= fake["recall@10%"] <= 1 and 0 <= fake["precision@10%"] <= 1
    (version,) = versions(model_dir)
    report = tmp_path / "report"
    args = ["--model-dir", str(model_dir), "evaluate", "--model", version, "--data", str(data)]
    assert main([*args, "--out", str(report)]) == 0
    assert "## On the compliance sample" in (report / "report.md").read_text()
    text = (report / "report.md").read_text()
    assert "## Drift between two periods" in text and "| counterfeit score |" in text
    bad = ["--split-at", "2001-01-01T00:00:00+00:00", "--out", str(tmp_path / "r2")]
    assert main([*args, *bad]) == 0  # a split outside the data: said so in the report
    assert "Not measured: both periods need parcels" in (tmp_path / "r2" / "report.md").read_text()


def test_period_drift_finds_the_feature_that_moved_and_compares_with_training(
    model_dir: Path,
) -> None:
    artifact = load(model_dir)
    ds = from_generator(GeneratorConfig(seed=5), 4000)
    boundary = float(np.median(ds.times))
    later = ds.times >= boundary
    ref = reference_of(artifact.meta)
    assert ref is not None
    name = next(iter(ref.features))
    X = build_features(ds.views, artifact.references)
    X[later, INDEX[name]] = X[later, INDEX[name]] * 10 + 1000  # out of the earlier range
    d = period_drift(artifact, replace(ds, X=X), boundary)
    assert d.sizes == (int((~later).sum()), int(later.sum()))
    assert d.between[("feature", name)] > ALERT_PSI
    assert d.vs_reference is not None
    earlier_vs_training, later_vs_training = d.vs_reference[("feature", name)]
    assert earlier_vs_training < ALERT_PSI < later_vs_training
    lines = drift_section(d)
    assert any(f"| {name} feature |" in line and "**shift**" in line for line in lines)
