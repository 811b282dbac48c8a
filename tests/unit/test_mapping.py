"""Training and evaluating on a table in another schema, through a mapping file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from models.mapping import MappingError, load_mapped
from models.parcel import value_usd
from models.registry import load, versions
from models.synthetic import GeneratorConfig, TrafficGenerator
from streams.cli import main

MAPPING = """
[columns]
time = "decl_date"
id = "decl_no"
declared_value = "cif_usd"
weight_kg = "gross_kg"
hts = "hs_code"
description = "goods"
origin = "ctry"
shipper = "exporter"
consignee = "importer_addr"

[labels]
undervaluation = "fraud"
"""


def _foreign_csv(path: Path, n: int = 6000) -> None:
    """Generated parcels written the way another customs administration might keep them."""
    gen = TrafficGenerator(GeneratorConfig(seed=21))
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "decl_no",
                "decl_date",
                "cif_usd",
                "gross_kg",
                "hs_code",
                "goods",
                "ctry",
                "exporter",
                "importer_addr",
                "fraud",
            ]
        )
        for events, label in gen.parcels(n):
            m = json.loads(next(e for e in events if e.kind == "manifest").value)
            w.writerow(
                [
                    label.hawb,
                    m["event_time"],
                    m["declared_value"],
                    m["weight_kg"],
                    m.get("hts", ""),
                    m["description"],
                    m["shipper"]["country"],
                    m["shipper"]["name"],
                    m["consignee"]["address"],
                    label.undervaluation,
                ]
            )


def test_train_and_evaluate_another_schema(tmp_path: Path) -> None:
    data, mapping = tmp_path / "declarations.csv", tmp_path / "mapping.toml"
    _foreign_csv(data)
    mapping.write_text(MAPPING)
    models, report = tmp_path / "models", tmp_path / "report"
    assert (
        main(["train", "--data", str(data), "--mapping", str(mapping), "--out", str(models)]) == 0
    )
    (version,) = versions(models)
    art = load(models, version)
    under = art.meta["test_metrics"]["undervaluation"]
    assert under["positives"] > 0
    assert under["precision@5%"] > 2 * under["base_rate"]  # it learned from their columns
    assert (
        main(
            [
                "--model-dir",
                str(models),
                "evaluate",
                "--model",
                version,
                "--data",
                str(data),
                "--mapping",
                str(mapping),
                "--out",
                str(report),
            ]
        )
        == 0
    )
    text = (report / "report.md").read_text()
    assert "undervaluation" in text and "P@1%" in text
    for png in ("pr_curves.png", "calibration.png", "score_distributions.png", "lift.png"):
        assert (report / png).stat().st_size > 1000


def test_bad_mapping_is_refused_with_a_reason(tmp_path: Path) -> None:
    data, mapping = tmp_path / "d.csv", tmp_path / "m.toml"
    _foreign_csv(data, n=50)
    mapping.write_text(MAPPING.replace('time = "decl_date"', ""))
    with pytest.raises(MappingError, match="lacks time"):
        load_mapped([data], mapping)
    mapping.write_text(MAPPING.replace('"gross_kg"', '"no_such_column"'))
    with pytest.raises(MappingError, match="no_such_column"):
        load_mapped([data], mapping)
    assert main(["train", "--data", str(data), "--mapping", str(mapping)]) == 2


def test_errors_are_printed_as_written(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Brackets in a message are text, not rich markup, and the line is not folded."""
    data, mapping = tmp_path / "d.csv", tmp_path / "m.toml"
    _foreign_csv(data, n=50)
    mapping.write_text(MAPPING.replace("[labels]", 'office = "office"\n[labels]'))
    assert main(["train", "--data", str(data), "--mapping", str(mapping)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ") and "unknown [columns] ['office']" in line
    assert main(["holds", "--since", "[bold]soon[/]"]) == 2
    assert "--since '[bold]soon[/]' is not" in capsys.readouterr().err


def test_a_fixed_currency_is_converted(tmp_path: Path) -> None:
    data, mapping = tmp_path / "d.csv", tmp_path / "m.toml"
    _foreign_csv(data, n=20)
    mapping.write_text(MAPPING)
    usd = load_mapped([data], mapping)
    mapping.write_text('currency = "EUR"\n' + MAPPING)
    eur = load_mapped([data], mapping)
    assert [value_usd(v) for v in eur.views] == pytest.approx(
        [1.08 * value_usd(v) for v in usd.views]
    )
