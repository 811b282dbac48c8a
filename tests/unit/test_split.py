"""The data scientist's own split: their files, or their dates; thresholds on validation."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from models.dataset import LabelledSet
from models.mapping import load_data
from models.registry import load, versions
from models.training import TrainConfig, split_at, split_by_file
from streams.cli import main
from tests.unit.test_mapping import MAPPING, _foreign_csv

DAY = 86_400.0


def test_split_at_one_or_two_dates() -> None:
    times = np.arange(100) * DAY
    cfg = TrainConfig()
    d = [datetime.fromtimestamp(t, UTC) for t in (60 * DAY, 80 * DAY)]
    tr, va, te = split_at(times[::-1].copy(), d, cfg)  # any row order: split by time
    assert len(tr) == 60 and len(va) == 20 and len(te) == 20
    tr, va, te = split_at(times, d[:1], cfg)
    assert len(te) == 40 and times[va].min() > times[tr].max() and len(tr) + len(va) == 60
    assert times[tr].max() < times[va].min() < times[te].min()


def test_split_by_file_keeps_each_file_in_time_order() -> None:
    ds = LabelledSet(
        ids=[str(i) for i in range(6)],
        views=[],
        Y=np.zeros((6, 3), dtype=np.int8),
        times=np.array([5.0, 1.0, 3.0, 2.0, 9.0, 8.0]),
        values=np.zeros(6),
        final=np.ones(6, dtype=bool),
        part=np.array([0, 0, 1, 1, 2, 2]),
    )
    assert [list(p) for p in split_by_file(ds)] == [[1, 0], [3, 2], [5, 4]]


def _split_csv(src: Path, dest: Path) -> list[Path]:
    """Their table cut by time into train, valid and test files (60/20/20)."""
    with src.open(newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["decl_date"])
    a, b = int(len(rows) * 0.6), int(len(rows) * 0.8)
    files = []
    for name, part in (("train", rows[:a]), ("valid", rows[a:b]), ("test", rows[b:])):
        path = dest / f"{name}.csv"
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(part)
        files.append(path)
    return files


def test_train_on_their_files_and_refit(tmp_path: Path) -> None:
    data, mapping, models = tmp_path / "all.csv", tmp_path / "m.toml", tmp_path / "models"
    _foreign_csv(data, n=4000)
    mapping.write_text(MAPPING)
    train, valid, test = _split_csv(data, tmp_path)
    assert np.bincount(load_data([train, valid, test], mapping).part).tolist() == [
        2400,
        800,
        800,
    ]
    args = ["train", "--train", str(train), "--valid", str(valid), "--test", str(test)]
    assert main([*args, "--mapping", str(mapping), "--out", str(models), "--refit"]) == 0
    meta = load(models, versions(models)[-1]).meta
    assert meta["data"]["split"] == {"train": 2400, "validation": 800, "test": 800}
    assert meta["data"]["refit"] and meta["measured_on"] == "test"
    assert set(meta["validation_metrics"]) == set(meta["test_metrics"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--train", "a.csv"], "--train needs --valid"),
        (["--data", "a.csv", "--train", "b.csv", "--valid", "c.csv"], "--data is one file"),
        (["--data", "a.csv", "--split-at", "2026-02-01", "2026-01-01"], "two in time order"),
        (["--data", "a.csv", "--split-at", "soon"], "'soon' is not an ISO 8601"),
    ],
)
def test_bad_splits_are_refused(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "a.csv").write_text("x\n1\n")
    assert main(["train", *args, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
