"""Features: one function from a batch of parcel views to a float32 matrix.

The same `build_features` runs in training, evaluation and the worker, so there is no
training/serving skew. A view is what the join and history stages know about one bill: its
manifest and/or entry and the shipper's and consignee's history. Anything missing is NaN,
never an error: a manifest-only parcel is still scored.

Reference statistics (median value per kg by HS heading) are learned at training time by
`References.fit` and stored in the model artifact, so the worker compares a parcel with the
same medians the model was trained against.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from models import nomenclature as hs
from models import parcel
from models.parcel import DE_MINIMIS_USD, ParcelView
from models.records import Record

NAN = math.nan

ORIGINS = (
    "CN",
    "HK",
    "US",
    "DE",
    "GB",
    "JP",
    "KR",
    "IN",
    "VN",
    "TW",
    "TR",
    "TH",
    "MX",
    "CA",
    "FR",
    "IT",
)
_ORIGIN_INDEX = {c: i for i, c in enumerate(ORIGINS)}
_ENTRY_TYPE_INDEX = {"86": 0, "11": 1, "01": 2}


FEATURES: tuple[str, ...] = (
    "has_manifest",
    "has_entry",
    "declared_value_usd",
    "manifest_value_usd",
    "entry_value_usd",
    "entry_to_manifest_value_ratio",
    "weight_kg",
    "log_value_per_kg",
    "value_per_kg_vs_hs_median",
    "threshold_gap_usd",
    "just_under_threshold",
    "hs_chapter",
    "hs_heading",
    "hs_risk_group",
    "hs_known",
    "origin",
    "entry_type",
    "pieces",
    "n_lines",
    "quantity",
    "log_unit_value",
    "desc_vague",
    "desc_brand",
    "desc_cover_phrase",
    "desc_hs_overlap",
    "desc_words",
    "shipper_business",
    "consignee_business",
    "consignee_name_suspect",
    "desc_mismatch",
    "consignee_mismatch",
    "hts_mismatch",
    "pieces_mismatch",
    "has_listing_url",
    "has_marketplace",
    "deliver_to_differs",
    "shipper_parcels",
    "shipper_age_days",
    "shipper_value_mean",
    "shipper_value_cv",
    "shipper_distinct_consignees",
    "shipper_vague_share",
    "shipper_seized_narcotics",
    "shipper_seized_ipr",
    "shipper_undervalued",
    "consignee_parcels",
    "consignee_parcels_today",
    "consignee_distinct_shippers",
    "consignee_prior_seizures",
    "filer_violation_rate",  # the entry filer's, smoothed (models/filers.py Board.history)
)
INDEX = {name: i for i, name in enumerate(FEATURES)}
CATEGORICAL = ("hs_chapter", "origin", "entry_type", "hs_risk_group")
SHIPPER_HISTORY = (
    "parcels",
    "age_days",
    "value_mean",
    "value_cv",
    "distinct_consignees",
    "vague_share",
    "seized_narcotics",
    "seized_ipr",
    "undervalued",
)
CONSIGNEE_HISTORY = ("parcels", "parcels_today", "distinct_shippers", "prior_seizures")


@dataclass
class References:
    """Medians learned from training data: log(value per kg) by HS heading and chapter."""

    heading_log_vpk: dict[str, float] = field(default_factory=dict)
    chapter_log_vpk: dict[str, float] = field(default_factory=dict)
    global_log_vpk: float = 0.0

    @classmethod
    def fit(cls, views: Sequence[ParcelView], min_count: int = 20) -> References:
        by_heading: dict[str, list[float]] = {}
        for v in views:
            code, value, weight = parcel.hs_code(v), parcel.value_usd(v), parcel.weight_kg(v)
            if code and value > 0 and weight > 0:
                by_heading.setdefault(code[:4], []).append(math.log(value / weight))
        by_chapter: dict[str, list[float]] = {}
        for heading, vals in by_heading.items():
            by_chapter.setdefault(heading[:2], []).extend(vals)
        everything = [x for vals in by_heading.values() for x in vals]
        return cls(
            heading_log_vpk={
                h: float(np.median(v)) for h, v in by_heading.items() if len(v) >= min_count
            },
            chapter_log_vpk={
                c: float(np.median(v)) for c, v in by_chapter.items() if len(v) >= min_count
            },
            global_log_vpk=float(np.median(everything)) if everything else 0.0,
        )

    def median_log_vpk(self, code: str) -> float:
        if code[:4] in self.heading_log_vpk:
            return self.heading_log_vpk[code[:4]]
        return self.chapter_log_vpk.get(code[:2], self.global_log_vpk)

    def to_dict(self) -> dict[str, Any]:
        return {
            "heading_log_vpk": self.heading_log_vpk,
            "chapter_log_vpk": self.chapter_log_vpk,
            "global_log_vpk": self.global_log_vpk,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> References:
        return cls(
            dict(d["heading_log_vpk"]), dict(d["chapter_log_vpk"]), float(d["global_log_vpk"])
        )


def _name_suspect(name: str) -> float:
    """Fictitious-looking consignee names: digits, a single token, or very short."""
    parts = name.split()
    return 1.0 if any(c.isdigit() for c in name) or len(parts) < 2 or len(name) < 5 else 0.0


@lru_cache(maxsize=1 << 16)  # a consignee's name comes with each of its parcels
def _consignee_facts(name: str) -> tuple[float, float]:
    return float(parcel.is_business(name)), _name_suspect(name)


@lru_cache(maxsize=1 << 16)  # the same descriptions recur (a shipper's goods)
def _description_facts(desc: str) -> tuple[float, float, float, float]:
    """vague, brand, cover phrase, word count."""
    raw_words = parcel.words(desc)
    return (
        float(parcel.vague(desc)),
        float(bool(raw_words & hs.BRAND_TERMS)),
        float(any(p in desc.lower() for p in hs.COVER_PHRASES)),
        float(len(raw_words)),
    )


@lru_cache(maxsize=1 << 16)
def _code_facts(code: str) -> tuple[float, float, float, float]:
    """chapter, heading, risk group, known; all NaN without a code."""
    if not code:
        return NAN, NAN, NAN, NAN
    return float(code[:2]), float(code[:4]), float(hs.risk_group(code)), float(hs.is_known(code))


@lru_cache(maxsize=1 << 16)
def _overlap(desc: str, code: str) -> float:
    """Share of the description's stems that the HS code's own descriptions use."""
    words = hs.tokens(desc)
    return len(words & hs.code_tokens(code)) / len(words) if code and words else NAN


@lru_cache(maxsize=1 << 16)
def _differs(a: str, b: str) -> float:
    """Two names or addresses that do not normalise to the same text."""
    return float(parcel.normalise(a) != parcel.normalise(b))


def _mismatches(m: Record, e: Record, code: str) -> tuple[float, float, float]:
    """Manifest against entry: description (1 - Jaccard of stems), consignee, HTS heading."""
    e_desc = hs.tokens(" ".join(line["description"] for line in e["lines"]))
    m_desc = hs.tokens(m["description"])
    union = m_desc | e_desc
    m_hts = m.get("hts")
    return (
        1.0 - len(m_desc & e_desc) / len(union) if union else 0.0,
        _differs(m["consignee"]["name"], e["consignee"]["name"]),
        float(m_hts[:4] != code[:4]) if m_hts else NAN,
    )


_NO_MISMATCH = (NAN, NAN, NAN)


def _text_row(v: ParcelView, code: str) -> tuple[float, ...]:
    """The Python part of a row, in `_RAW` order: raw numbers, and string facts (cached)."""
    m, e = v.get("manifest"), v.get("entry")
    desc = parcel.description(v)
    shipper, consignee = parcel.parties(v)
    deliver = e.get("final_deliver_to") if e is not None else None
    return (
        float(m is not None),
        float(e is not None),
        parcel.manifest_value_usd(m) if m is not None else NAN,
        parcel.entry_value_usd(e) if e is not None else NAN,
        parcel.value_usd(v),
        parcel.weight_kg(v),
        float(m["pieces"]) if m is not None else NAN,
        float(sum(line["quantity"] for line in e["lines"])) if e is not None else NAN,
        float(len(e["lines"])) if e is not None else NAN,
        float(_ENTRY_TYPE_INDEX[e["entry_type"]]) if e is not None else NAN,
        float(_ORIGIN_INDEX.get(shipper["country"], len(ORIGINS))),
        *_code_facts(code),
        *_description_facts(desc),
        _overlap(desc, code),
        float(parcel.is_business(shipper["name"])),
        *_consignee_facts(consignee["name"]),
        *(_mismatches(m, e, code) if m is not None and e is not None else _NO_MISMATCH),
        float(bool(e and e.get("listing_url"))),
        float(bool(e and e.get("marketplace"))),
        _differs(deliver, consignee["address"]) if deliver else NAN,
    )


_RAW = (
    "has_manifest",
    "has_entry",
    "manifest_value_usd",
    "entry_value_usd",
    "declared_value_usd",
    "weight_kg",
    "pieces",
    "quantity",
    "n_lines",
    "entry_type",
    "origin",
    "hs_chapter",
    "hs_heading",
    "hs_risk_group",
    "hs_known",
    "desc_vague",
    "desc_brand",
    "desc_cover_phrase",
    "desc_words",
    "desc_hs_overlap",
    "shipper_business",
    "consignee_business",
    "consignee_name_suspect",
    "desc_mismatch",
    "consignee_mismatch",
    "hts_mismatch",
    "listing_url",
    "marketplace",
    "deliver_to_differs",
)
_NANS = (NAN,) * max(len(SHIPPER_HISTORY), len(CONSIGNEE_HISTORY))
_NO_HISTORY: Mapping[str, float] = {}


def _history(figures: list[Mapping[str, float] | None], keys: Sequence[str]) -> np.ndarray:
    """(n, len(keys)) of a history's figures, NaN where the parcel has none."""
    return np.array(
        [tuple(map((f or _NO_HISTORY).get, keys, _NANS)) for f in figures], dtype=np.float64
    ).reshape(len(figures), len(keys))


def _log(x: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """log(x) where `ok`, else NaN. By `math.log`: numpy's SIMD log differs from libm's in
    the last bit now and then, and a feature must not move with the numpy build."""
    out = np.full(len(x), NAN)
    out[ok] = np.fromiter(map(math.log, x[ok].tolist()), dtype=np.float64, count=int(ok.sum()))
    return out


def build_features(views: Sequence[ParcelView], refs: References) -> np.ndarray:
    """Views -> float32 matrix (len(views), len(FEATURES)); missing inputs are NaN.

    Strings need Python once per row (their facts cached: descriptions, names and codes
    recur); everything computed from numbers is done on the batch's columns."""
    if not views:
        return np.empty((0, len(FEATURES)), dtype=np.float32)
    codes = [parcel.hs_code(v) for v in views]
    raw = np.array([_text_row(v, c) for v, c in zip(views, codes, strict=True)])
    col = {name: raw[:, j] for j, name in enumerate(_RAW)}
    medians = {c: refs.median_log_vpk(c) for c in set(codes) if c}
    median = np.array([medians.get(c, NAN) for c in codes])
    both = (col["has_manifest"] == 1.0) & (col["has_entry"] == 1.0)
    mv, ev, weight = col["manifest_value_usd"], col["entry_value_usd"], col["weight_kg"]
    value, pieces, quantity = col["declared_value_usd"], col["pieces"], col["quantity"]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_vpk = _log(value / weight, (value > 0) & (weight > 0))
        log_unit = _log(value / quantity, (value > 0) & (quantity > 0))
        ratio = np.where(both & (mv > 0), ev / mv, NAN)
    pcs_mm = np.where(both, np.abs(quantity - pieces) > np.maximum(2.0, 0.5 * pieces), NAN)
    col |= {
        "entry_to_manifest_value_ratio": ratio,
        "log_value_per_kg": log_vpk,
        "value_per_kg_vs_hs_median": log_vpk - median,
        "threshold_gap_usd": DE_MINIMIS_USD - value,
        "just_under_threshold": (value >= 0.85 * DE_MINIMIS_USD) & (value < DE_MINIMIS_USD),
        "log_unit_value": log_unit,
        "pieces_mismatch": pcs_mm,
        "has_listing_url": col["listing_url"],
        "has_marketplace": col["marketplace"],
    }
    shipper = _history([v.get("shipper_history") for v in views], SHIPPER_HISTORY)
    consignee = _history([v.get("consignee_history") for v in views], CONSIGNEE_HISTORY)
    col |= {f"shipper_{k}": shipper[:, j] for j, k in enumerate(SHIPPER_HISTORY)}
    col |= {f"consignee_{k}": consignee[:, j] for j, k in enumerate(CONSIGNEE_HISTORY)}
    col["filer_violation_rate"] = np.array(
        [(v.get("filer_history") or _NO_HISTORY).get("violation_rate", NAN) for v in views],
        dtype=np.float64,
    )
    return np.column_stack([col[name] for name in FEATURES]).astype(np.float32)
