"""Bring your own data: another schema's table mapped onto parcel views.

A data scientist with declaration data in their own layout (CSV, Parquet or JSONL) writes
a small TOML mapping from our fields to their columns; each row becomes a parcel view and
goes through the same `build_features`, training and evaluation as our own data. Shipper
and consignee history is replayed in time order with the same history functions as the
worker. A table whose columns the parcel fields lack (office, importer, tax rate, ...) is
better described with a `[features]` section: models/tabular.py trains on its own columns.
Example:

    [columns]
    time = "declaration_date"        # required: ISO 8601 date or time
    id = "declaration_id"            # required
    declared_value = "cif_value_usd" # required
    weight_kg = "gross_weight"
    hts = "hs6"
    description = "goods_description"
    origin = "origin_country"        # ISO alpha-2
    shipper = "exporter_name"
    consignee = "importer_address"
    quantity = "quantity"
    value_at_stake = "duty_usd"      # Revenue@n% uses it; default: declared_value
    currency = "currency"            # ISO 4217 per row; or a fixed `currency = "EUR"` on top

    [labels]                         # our label = their 0/1 column; omit what you lack
    undervaluation = "fraud"
    counterfeit = "ipr_seizure"
"""

from __future__ import annotations

import csv
import math
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from models import history, parcel
from models.dataset import LabelledSet, concat, read_jsonl
from models.parcel import ParcelView
from models.records import CATEGORIES
from models.tabular import TableSpec, is_table_mapping, load_table

REQUIRED = ("time", "id", "declared_value")
KNOWN = (
    *REQUIRED,
    "weight_kg",
    "hts",
    "description",
    "origin",
    "shipper",
    "consignee",
    "quantity",
    "value_at_stake",
    "currency",
)


class MappingError(ValueError):
    """A mapping file or table that cannot be used, said in one line."""


def _toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MappingError(f"{path}: {exc}") from None


def load_mapping(path: Path) -> dict[str, Any]:
    """A mapping onto parcel fields (no [features] section)."""
    m = _toml(path)
    cols, labels = m.get("columns", {}), m.get("labels", {})
    missing = [k for k in REQUIRED if k not in cols]
    if missing:
        raise MappingError(f"{path}: [columns] lacks {', '.join(missing)}")
    unknown = set(cols) - set(KNOWN)
    if unknown:
        raise MappingError(
            f"{path}: unknown [columns] {sorted(unknown)}; known: {KNOWN} "
            "(a table of its own schema lists its columns under [features]: models/tabular.py)"
        )
    bad = set(labels) - set(CATEGORIES)
    if bad or not labels:
        raise MappingError(f"{path}: [labels] must map some of {CATEGORIES}, got {sorted(labels)}")
    return {"columns": cols, "labels": labels, "currency": m.get("currency", "USD")}


def _rows(path: Path) -> Iterator[Mapping[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="") as f:
            yield from csv.DictReader(f)
    elif suffix in (".jsonl", ".json"):
        with path.open("rb") as f:
            for line in f:
                if line.strip():
                    yield orjson.loads(line)
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        yield from pq.read_table(path).to_pylist()
    else:
        raise MappingError(f"{path}: unsupported format {suffix!r} (csv, jsonl, parquet)")


def _num(v: Any) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


def _time(v: Any) -> float:
    s = str(v)
    return datetime.fromisoformat(s if len(s) > 10 else s + "T00:00:00+00:00").timestamp()


def _times(raw: Sequence[Mapping[str, Any]], column: str, data: str) -> np.ndarray:
    try:
        return np.array([_time(r[column]) for r in raw])
    except ValueError as exc:
        raise MappingError(f"{data}: time column {column!r}: {exc}") from None


def read_rows(
    files: Sequence[Path], needed: Iterable[str]
) -> tuple[list[Mapping[str, Any]], np.ndarray]:
    """The rows of all files, and which file each came from; every file must have `needed`."""
    raw: list[Mapping[str, Any]] = []
    parts: list[int] = []
    for k, path in enumerate(files):
        rows = list(_rows(path))
        if not rows:
            raise MappingError(f"{path}: no rows")
        absent = [c for c in needed if c not in rows[0]]
        if absent:
            raise MappingError(f"{path}: no column(s) {absent} (first row has {sorted(rows[0])})")
        raw += rows
        parts += [k] * len(rows)
    return raw, np.asarray(parts)


def load_mapped(files: Sequence[Path], mapping: Path) -> LabelledSet:
    """Their table(s) -> our labelled parcel views (manifest-like), history replayed in time
    order over all files together, as a worker would have seen them."""
    data = " + ".join(map(str, files))
    m = _toml(mapping)
    if is_table_mapping(m):
        spec = TableSpec.from_mapping(m, str(mapping))
        raw, parts = read_rows(files, spec.columns())
        return load_table(raw, parts, _times(raw, spec.time, data), spec, f"{data} via {mapping}")
    m = load_mapping(mapping)
    cols, labels = m["columns"], m["labels"]
    raw, parts = read_rows(files, [*cols.values(), *labels.values()])

    def get(r: Mapping[str, Any], field: str, default: Any = "") -> Any:
        col = cols.get(field)
        return r.get(col, default) if col else default

    times = _times(raw, cols["time"], data)
    order = np.argsort(times, kind="stable")
    shippers: dict[str, Any] = {}
    consignees: dict[str, Any] = {}
    ids: list[str] = []
    views: list[ParcelView] = []
    ys: list[list[int]] = []
    values: list[float] = []
    for i in order:
        r = raw[i]
        t = times[i]
        value = _num(get(r, "declared_value"))
        origin = str(get(r, "origin", "")).upper()[:2] or "ZZ"
        shipper_name = str(get(r, "shipper", "")) or "unknown"
        consignee_addr = str(get(r, "consignee", "")) or "unknown"
        manifest: dict[str, Any] = {
            "hawb": str(get(r, "id")),
            "event_time": "",
            "description": str(get(r, "description")),
            "weight_kg": _num(get(r, "weight_kg", math.nan)),
            "declared_value": value,
            "currency": str(get(r, "currency")).upper() or m["currency"],
            "pieces": _num(get(r, "quantity", 1)) or 1,
            "hts": "".join(ch for ch in str(get(r, "hts")) if ch.isdigit()) or None,
            "shipper": {"name": shipper_name, "address": "", "city": "", "country": origin},
            "consignee": {
                "name": consignee_addr,
                "address": consignee_addr,
                "city": "",
                "country": "US",
            },
        }
        view = ParcelView(hawb=manifest["hawb"], manifest=manifest, entry=None)
        skey, ckey = parcel.keys(view)
        view["shipper_history"] = history.shipper_features(shippers.get(skey), t)
        view["consignee_history"] = history.consignee_features(consignees.get(ckey), t)
        views.append(view)
        shippers[skey] = history.observe_shipper_parcel(shippers.get(skey), view, ckey, t)
        consignees[ckey] = history.observe_consignee_parcel(consignees.get(ckey), view, skey, t)
        ids.append(manifest["hawb"])
        ys.append([int(_num(r.get(labels[c], 0)) > 0) if c in labels else 0 for c in CATEGORIES])
        at_stake = _num(get(r, "value_at_stake", value))
        values.append(0.0 if math.isnan(at_stake) else at_stake)
    return LabelledSet(
        ids,
        views,
        np.asarray(ys, dtype=np.int8),
        times[order],
        np.asarray(values),
        np.ones(len(ids), dtype=bool),
        f"{data} via {mapping}",
        part=parts[order],
    )


def load_data(files: Path | Sequence[Path], mapping: Path | None = None) -> LabelledSet:
    """Labelled data for train and evaluate: our JSONL (generate --dataset, export), or
    another schema's table through a mapping file; several files (train, valid, test) are
    one set whose `part` says each row's file. ValueError says what is wrong."""
    files = [files] if isinstance(files, Path) else list(files)
    for path in files:
        if not path.exists():
            raise ValueError(f"no such file: {path}")
    if mapping:
        return load_mapped(files, mapping)
    return concat([read_jsonl(p) for p in files])
