"""Any labelled table in its own schema: features from its own columns, not parcel fields.

A data scientist's declarations (office, procedure, declarant, importer, HS6, tax rate,
mass, price, ...) carry information the parcel features (models/features.py) have no slot
for, so a mapping with a `[features]` section trains on the table's columns as they are:

    currency = "KRW"                     # a fixed currency, or [columns] currency = "cur"
    [columns]
    time = "date"                        # required: ISO 8601 date or time
    id = "declaration_id"                # required
    value = "price"                      # optional: the value at stake (Revenue@n%)
    [labels]                             # any names, one or more 0/1 columns
    fraud = "fraud"
    critical = "critical"
    [features]
    numeric = ["mass", "tax_rate"]
    money = ["price"]                    # numeric, converted to USD by the currency
    categorical = ["office", "procedure", "origin_country"]
    entities = ["declarant", "importer", "seller", "courier"]
    hs = "hs6"                           # chapter, heading, subheading, full code
    text = ["description"]
    [memorisation]
    keys = ["hs6", "price", "mass"]      # default: hs and the value column

Everything is learned on the training rows only: category codes, entity frequencies and
target statistics (per label, smoothed). Training rows get their target statistics out of
fold (each fold encoded by the others), so no row sees its own label; later periods never
contribute. Columns the mapping does not name do not become features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from models.dataset import LabelledSet
from models.parcel import USD_PER

MAX_CATEGORIES = 250  # codes below HistGradientBoosting's 255 bins; the rest is "other"
FOLDS = 5
SMOOTHING = 20.0  # rows of prior weight in a target statistic


class TableError(ValueError):
    """A table mapping that cannot be used, said in one line."""


@dataclass(frozen=True)
class TableSpec:
    """Which of the table's columns are what (see the module docstring)."""

    time: str
    id: str
    labels: dict[str, str]  # our label name -> their 0/1 column
    value: str | None = None
    currency: str | None = None  # fixed ISO 4217 code
    currency_column: str | None = None
    numeric: tuple[str, ...] = ()
    money: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    entities: tuple[str, ...] = ()
    hs: str | None = None
    text: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()  # memorisation check: rows "seen" by these columns

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any], where: str) -> TableSpec:
        cols, feats = dict(m.get("columns", {})), dict(m.get("features", {}))
        missing = [k for k in ("time", "id") if k not in cols]
        if missing:
            raise TableError(f"{where}: [columns] lacks {', '.join(missing)}")
        extra = set(cols) - {"time", "id", "value", "currency"}
        if extra:
            raise TableError(
                f"{where}: [columns] takes time, id, value and currency; "
                f"put {sorted(extra)} under [features]"
            )
        lists = ("numeric", "money", "categorical", "entities", "text")
        unknown = set(feats) - {*lists, "hs"}
        if unknown:
            raise TableError(f"{where}: unknown [features] {sorted(unknown)}; known: {lists}, hs")
        if not any(feats.values()):
            raise TableError(f"{where}: [features] names no column to learn from")
        labels = dict(m.get("labels", {}))
        if not labels:
            raise TableError(f"{where}: [labels] names no label column")
        if m.get("currency") and cols.get("currency"):
            raise TableError(f"{where}: a fixed currency or a currency column, not both")
        if m.get("currency") and str(m["currency"]).upper() not in USD_PER:
            raise TableError(
                f"{where}: currency {m['currency']!r} unknown; known: {sorted(USD_PER)}"
            )
        value = cols.get("value")
        keys = m.get("memorisation", {}).get("keys") or [c for c in (feats.get("hs"), value) if c]
        return cls(
            time=cols["time"],
            id=cols["id"],
            labels=labels,
            value=value,
            currency=m.get("currency"),
            currency_column=cols.get("currency"),
            hs=feats.get("hs"),
            keys=tuple(keys),
            **{k: tuple(feats.get(k, ())) for k in lists},
        )

    def columns(self) -> list[str]:
        """Every column the table must have."""
        named = [self.time, self.id, self.value, self.currency_column, self.hs]
        groups = (self.numeric, self.money, self.categorical, self.entities, self.text)
        every = [c for c in named if c] + [c for g in groups for c in g]
        return list(dict.fromkeys([*every, *self.labels.values(), *self.keys]))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TableSpec:
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**fields)


def _num(values: np.ndarray) -> np.ndarray:
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            continue
    out[~np.isfinite(out)] = np.nan
    return out


def usd_rate(spec: TableSpec, table: Mapping[str, np.ndarray]) -> np.ndarray:
    """USD per unit of each row's currency (1 with none given; NaN for an unknown one)."""
    n = len(table[spec.id])
    if spec.currency_column:
        return np.array([USD_PER.get(str(c).upper(), np.nan) for c in table[spec.currency_column]])
    return np.full(n, USD_PER.get(spec.currency.upper(), np.nan) if spec.currency else 1.0)


def _hs_levels(spec: TableSpec, table: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The HS code at 2, 4 and 6 digits and in full (a level of its own when longer)."""
    if not spec.hs:
        return {}
    digits = np.array(["".join(ch for ch in str(v) if ch.isdigit()) for v in table[spec.hs]])
    levels = {
        f"{spec.hs}:{n}": np.array([d[:n] if len(d) >= n else "" for d in digits])
        for n in (2, 4, 6)
    }
    return levels | {f"{spec.hs}:full": digits}


def _words(values: np.ndarray) -> np.ndarray:
    return np.array([float(len(str(v).split())) for v in values])


def _normalised(values: np.ndarray) -> np.ndarray:
    return np.array([" ".join(str(v).lower().split()) for v in values])


class TableEncoder:
    """Table columns -> a float matrix; learns only from the rows it is fitted on.

    Its state is plain lists and numbers (`state`), kept in the artifact's meta.json.
    """

    def __init__(self, spec: TableSpec, state: Mapping[str, Any] | None = None) -> None:
        self.spec = spec
        self.state = dict(state or {})

    def _categoricals(self, table: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cats = {c: table[c].astype(str) for c in self.spec.categorical}
        if self.spec.currency_column:
            cats[self.spec.currency_column] = table[self.spec.currency_column].astype(str)
        hs2 = f"{self.spec.hs}:2"
        levels = _hs_levels(self.spec, table)
        if hs2 in levels:
            cats[hs2] = levels[hs2]
        return cats

    def _entities(self, table: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        ents = {c: table[c].astype(str) for c in self.spec.entities}
        ents |= {k: v for k, v in _hs_levels(self.spec, table).items() if not k.endswith(":2")}
        ents |= {f"{c}:text": _normalised(table[c]) for c in self.spec.text}
        return ents

    @property
    def feature_names(self) -> list[str]:
        labels = list(self.spec.labels)
        names = [*self.spec.numeric, *(f"{c}:usd" for c in self.spec.money)]
        names += [f"{c}:words" for c in self.spec.text]
        names += list(self.state["categories"])
        for e in self.state["entities"]:
            names += [f"{e}:freq", *(f"{e}:{lab}_rate" for lab in labels)]
        return names

    @property
    def categorical_indices(self) -> list[int]:
        first = len(self.spec.numeric) + len(self.spec.money) + len(self.spec.text)
        return list(range(first, first + len(self.state["categories"])))

    def fit_transform(self, table: Mapping[str, np.ndarray], Y: np.ndarray) -> np.ndarray:
        """Learn from these (training) rows; their target statistics come out of fold."""
        categories = {}
        for c, v in self._categoricals(table).items():
            names, counts = np.unique(v[v != ""], return_counts=True)
            top = names[np.argsort(-counts, kind="stable")][:MAX_CATEGORIES]
            categories[c] = top.tolist()
        entities, out_of_fold = {}, {}
        folds = np.array_split(np.arange(len(Y)), FOLDS)
        columns = self._entities(table)
        full = f"{self.spec.hs}:full"
        if full in columns and not any(len(d) > 6 for d in columns[full]):
            del columns[full]  # the same as the 6-digit level
        for c, v in columns.items():
            names, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
            sums = np.stack(
                [np.bincount(inverse, Y[:, j], len(names)) for j in range(Y.shape[1])], 1
            )
            entities[c] = {
                "values": names.tolist(),
                "counts": counts.tolist(),
                "sums": sums.tolist(),
            }
            oof = np.empty((len(v), Y.shape[1]))
            for fold in folds:
                f_counts = np.bincount(inverse[fold], minlength=len(names))
                f_sums = np.stack(
                    [np.bincount(inverse[fold], Y[fold, j], len(names)) for j in range(Y.shape[1])],
                    1,
                )
                prior = (Y.sum(0) - Y[fold].sum(0)) / max(len(Y) - len(fold), 1)
                rest_counts = (counts - f_counts)[:, None]
                rates = (sums - f_sums + SMOOTHING * prior) / (rest_counts + SMOOTHING)
                oof[fold] = rates[inverse[fold]]
            oof[v == ""] = np.nan
            out_of_fold[c] = oof
        self.state = {
            "rows": len(Y),
            "prior": Y.mean(0).tolist(),
            "categories": categories,
            "entities": entities,
        }
        return self._matrix(table, out_of_fold)

    def transform(self, table: Mapping[str, np.ndarray]) -> np.ndarray:
        """Rows of any later period, with the statistics of all training rows."""
        return self._matrix(table, {})

    def _matrix(
        self, table: Mapping[str, np.ndarray], rates: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        usd = usd_rate(self.spec, table)
        cols = [_num(table[c]) for c in self.spec.numeric]
        cols += [_num(table[c]) * usd for c in self.spec.money]
        cols += [_words(table[c]) for c in self.spec.text]
        for c, v in self._categoricals(table).items():
            code = {name: i for i, name in enumerate(self.state["categories"][c])}
            other = float(len(code))
            cols.append(np.array([code.get(x, other) if x else np.nan for x in v]))
        prior = np.asarray(self.state["prior"])
        total = self.state["rows"]
        columns = self._entities(table)
        for c, st in self.state["entities"].items():
            v = columns[c]
            index = {name: i for i, name in enumerate(st["values"])}
            at = np.array([index.get(x, -1) for x in v])
            seen = at >= 0
            counts = np.asarray(st["counts"], dtype=float)
            freq = np.where(seen, counts[at] / total, 0.0)
            if c in rates:
                rate = rates[c]
            else:
                sums = np.asarray(st["sums"], dtype=float).reshape(len(counts), -1)
                all_rates = (sums + SMOOTHING * prior) / (counts[:, None] + SMOOTHING)
                rate = np.where(seen[:, None], all_rates[at], prior)
            missing = v == ""
            freq[missing] = np.nan
            rate = np.where(missing[:, None], np.nan, rate)
            cols += [freq, *rate.T]
        return np.column_stack(cols).astype(np.float32)


def load_table(
    raw: Sequence[Mapping[str, Any]],
    parts: np.ndarray,
    times: np.ndarray,
    spec: TableSpec,
    source: str,
) -> LabelledSet:
    """Rows of their table(s) -> a labelled set in time order whose `table` has the columns."""
    order = np.argsort(times, kind="stable")
    raw = [raw[i] for i in order]
    table = {c: np.array(["" if r[c] is None else str(r[c]) for r in raw]) for c in spec.columns()}
    Y = np.stack([_num(table[col]) > 0 for col in spec.labels.values()], 1).astype(np.int8)
    if spec.value:
        values = np.nan_to_num(_num(table[spec.value]) * usd_rate(spec, table))
    else:
        values = np.zeros(len(raw))
    return LabelledSet(
        ids=table[spec.id].tolist(),
        views=[],
        Y=Y,
        times=times[order],
        values=values,
        final=np.ones(len(raw), dtype=bool),
        source=source,
        labels=tuple(spec.labels),
        part=parts[order],
        table=table,
        spec=spec,
    )


def is_table_mapping(m: Mapping[str, Any]) -> bool:
    """A mapping with a [features] section describes a table of its own schema."""
    return "features" in m
