"""A table in its own schema (issue 20): its own labels, columns, entities, HS hierarchy,
currency, its own split, per-row scores and a memorisation check, through the CLI alone."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from models.dataset import LabelledSet
from models.evaluation import key_hashes, memorisation
from models.registry import ArtifactError, load, versions
from models.tabular import TableEncoder, TableError, TableSpec
from models.training import constant_features
from streams.cli import main
from tests.declarations import MAPPING, write_split


def _spec(**kw: object) -> TableSpec:
    base: dict[str, object] = {"time": "t", "id": "id", "labels": {"fraud": "y"}}
    return TableSpec(**(base | kw))  # type: ignore[arg-type]


def _table(**cols: list[str]) -> dict[str, np.ndarray]:
    n = len(next(iter(cols.values())))
    return {"id": np.array([str(i) for i in range(n)]), **{k: np.array(v) for k, v in cols.items()}}


def test_target_statistics_come_out_of_fold_and_from_training_only() -> None:
    spec = _spec(entities=("importer",))
    n = 100
    importer = ["A"] * 50 + [f"U{i}" for i in range(50)]  # one frequent, 50 seen once
    Y = np.zeros((n, 1), dtype=np.int8)
    Y[50:, 0] = 1  # every once-seen importer is fraud: only its own label could say so
    enc = TableEncoder(spec)
    X = enc.fit_transform(_table(importer=importer), Y)
    assert enc.feature_names == ["importer:freq", "importer:fraud_rate"]
    rate = X[:, 1]
    # a once-seen importer's rate comes from the other folds: its own label is not in it
    assert rate[50:].max() < 0.8
    later = enc.transform(_table(importer=["A", "U3", "NEW", ""]))
    assert later[0, 1] == pytest.approx(10 / 70)  # (0 fraud + 20 x prior 0.5) / (50 + 20)
    assert later[1, 1] > rate[53]  # later rows: the statistics of all training rows
    assert later[2, 0] == 0.0 and later[2, 1] == pytest.approx(0.5)  # unseen: the prior
    assert np.isnan(later[3]).all()  # missing is missing


def test_hs_hierarchy_currency_and_only_named_columns() -> None:
    spec = _spec(hs="hs", money=("price",), categorical=("office",), currency="KRW")
    enc = TableEncoder(spec)
    table = _table(
        hs=["6404.19", "640411", "8517120000", ""],
        price=["1000", "x", "5", "7"],
        office=["1", "1", "2", ""],
        unused=["a", "b", "c", "d"],
    )
    X = enc.fit_transform(table, np.array([[0], [1], [0], [0]], dtype=np.int8))
    names = enc.feature_names
    assert names[:3] == ["price:usd", "office", "hs:2"]
    assert {"hs:4:freq", "hs:6:fraud_rate", "hs:full:freq"} <= set(names)
    assert not any("unused" in n for n in names)  # unnamed columns are not features
    assert X[0, 0] == pytest.approx(1000 * 0.00073) and np.isnan(X[1, 0])
    assert enc.categorical_indices == [1, 2]
    assert X[:3, 1].tolist() == [0.0, 0.0, 1.0] and np.isnan(X[3, 1])  # by frequency
    assert X[0, 2] == X[1, 2] != X[2, 2] and np.isnan(X[3, 2])  # chapter 64, 64, 85, none
    by_column = TableEncoder(_spec(money=("price",), currency_column="cur"))
    out = by_column.fit_transform(
        _table(price=["10", "10"], cur=["EUR", "XXX"]), np.array([[0], [1]], dtype=np.int8)
    )
    assert out[0, 0] == pytest.approx(10.8) and np.isnan(out[1, 0])


@pytest.mark.parametrize(
    "mapping, message",
    [
        ({"columns": {"time": "t"}}, "lacks id"),
        ({"columns": {"time": "t", "id": "i", "office": "o"}}, "put ['office'] under [features]"),
        ({"columns": {"time": "t", "id": "i"}, "features": {"colour": []}}, "unknown [features]"),
        ({"columns": {"time": "t", "id": "i"}, "features": {}}, "names no column to learn"),
        (
            {"columns": {"time": "t", "id": "i"}, "features": {"hs": "h"}},
            "[labels] names no label",
        ),
        (
            {
                "columns": {"time": "t", "id": "i"},
                "features": {"hs": "h"},
                "labels": {"y": "y"},
                "currency": "ABC",
            },
            "currency 'ABC' unknown",
        ),
    ],
)
def test_bad_table_mappings_say_why(mapping: dict, message: str) -> None:
    with pytest.raises(TableError, match=message.replace("[", r"\[")):
        TableSpec.from_mapping(mapping, "m.toml")


def test_constant_features_are_named() -> None:
    X = np.array([[1.0, np.nan, 0.0], [1.0, np.nan, 1.0]])
    assert constant_features(X, ["one", "empty", "varies"]) == ["one", "empty"]


def test_memorisation_splits_rows_by_keys_seen_in_training() -> None:
    spec = _spec(keys=("hs", "price"))
    table = _table(hs=["1", "1", "2", "3"], price=["5", "5", "5", "5"])
    ds = LabelledSet(
        ids=list(table["id"]),
        views=[],
        Y=np.array([[1], [0], [1], [0]], dtype=np.int8),
        times=np.arange(4.0),
        values=np.ones(4),
        final=np.ones(4, dtype=bool),
        labels=("fraud",),
        table=table,
        spec=spec,
    )
    seen = key_hashes(ds.subset(np.array([0])), spec.keys)
    groups = memorisation(seen, ds, np.array([[0.9], [0.1], [0.2], [0.3]]), spec.keys)
    assert groups["seen in training"]["fraud"]["n"] == 2
    assert groups["never seen"]["fraud"]["n"] == 2
    assert groups["seen in training"]["fraud"]["precision@1%"] == 1.0
    assert groups["never seen"]["fraud"]["precision@1%"] == 0.0


def test_declarations_of_an_unseen_schema_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The data scientist's whole round: their train/valid/test files, their labels, the
    console table, the report with the seen/unseen breakdown and per-row scores."""
    train, valid, test = write_split(tmp_path, n=8000)
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING)
    models, report, scores = tmp_path / "models", tmp_path / "report", tmp_path / "scores.csv"
    files = ["--train", str(train), "--valid", str(valid), "--test", str(test)]
    assert main(["train", *files, "--mapping", str(mapping), "--out", str(models)]) == 0
    (version,) = versions(models)
    meta = load(models, version, tables=True).meta
    assert meta["labels"] == ["fraud", "critical"]
    assert meta["data"]["split"] == {"train": 4800, "validation": 1600, "test": 1600}
    assert "importer_id:fraud_rate" in meta["features"] and "hs6:6:freq" in meta["features"]
    fraud = meta["test_metrics"]["fraud"]
    assert fraud["precision@5%"] > 2 * fraud["base_rate"]  # it learned from their columns
    with pytest.raises(ArtifactError, match="its own schema"):
        load(models, version)  # a worker never serves it
    capsys.readouterr()

    args = ["--model-dir", str(models), "evaluate", "--model", version, "--data", str(test)]
    assert (
        main([*args, "--mapping", str(mapping), "--out", str(report), "--scores-out", str(scores)])
        == 0
    )
    console = capsys.readouterr().err
    for cell in ("fraud", "critical", "@1%", "@2%", "@5%", "@10%", "Rev"):
        assert cell in console
    text = (report / "report.md").read_text()
    assert "## Memorisation check" in text
    assert "fraud, seen in training (" in text and "fraud, never seen (" in text
    assert "Constant in training" in text
    with scores.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1600
    assert list(rows[0]) == ["id", "time", "fraud", "critical", "action", "category"]
    assert {r["action"] for r in rows} <= {"", "hold", "review"}
    assert any(r["action"] for r in rows)


def test_text_columns_give_length_and_target_rates() -> None:
    enc = TableEncoder(_spec(text=("goods",)))
    X = enc.fit_transform(
        _table(goods=["Herbal  Candy", "herbal candy", "shoes", ""]),
        np.array([[1], [1], [0], [0]], dtype=np.int8),
    )
    assert enc.feature_names == ["goods:words", "goods:text:freq", "goods:text:fraud_rate"]
    assert X[:, 0].tolist() == [2.0, 2.0, 1.0, 0.0]
    assert X[0, 1] == X[1, 1] == 0.5  # the same text however it is spaced or cased


def test_a_parcel_model_refuses_a_table(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _train, _valid, test = write_split(tmp_path, n=200)
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING)
    args = ["--model-dir", str(model_dir), "evaluate", "--model", versions(model_dir)[-1]]
    args += ["--data", str(test), "--mapping", str(mapping), "--out", str(tmp_path / "r")]
    assert main(args) == 2
    assert "scores ['fentanyl', 'counterfeit', 'undervaluation']" in capsys.readouterr().err


def test_later_rows_get_the_features_training_had() -> None:
    """A level the training codes had (full 10-digit HS) is a feature for any later table."""
    enc = TableEncoder(_spec(hs="hs"))
    enc.fit_transform(_table(hs=["8517120000", "640411"]), np.array([[1], [0]], dtype=np.int8))
    later = enc.transform(_table(hs=["640411"]))
    assert later.shape == (1, len(enc.feature_names)) and "hs:full:freq" in enc.feature_names
    six_digit = TableEncoder(_spec(hs="hs"))
    six_digit.fit_transform(_table(hs=["640411", "851712"]), np.array([[1], [0]], dtype=np.int8))
    assert "hs:full:freq" not in six_digit.feature_names
    assert six_digit.transform(_table(hs=["8517120000"])).shape == (1, 5)  # hs:2, 4, 6
