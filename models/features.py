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
from typing import Any, TypedDict

import numpy as np

from models import nomenclature as hs
from models.records import Record

DE_MINIMIS_USD = 800.0
NAN = math.nan

# Approximate reference rates to USD: declared values are almost always USD; other
# currencies are converted roughly, and an unknown currency leaves the value missing.
USD_PER = {
    "USD": 1.0,
    "EUR": 1.08,
    "GBP": 1.27,
    "CNY": 0.14,
    "HKD": 0.128,
    "JPY": 0.0067,
    "KRW": 0.00073,
    "CAD": 0.73,
    "INR": 0.012,
    "TWD": 0.031,
    "VND": 0.00004,
}

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
_BUSINESS = frozenset(
    [
        "ltd",
        "co",
        "inc",
        "llc",
        "corp",
        "gmbh",
        "limited",
        "company",
        "trading",
        "factory",
        "store",
        "shop",
        "industrial",
        "technology",
        "tech",
        "industry",
        "srl",
        "sa",
        "bv",
        "plc",
        "pty",
    ]
)


class ParcelView(TypedDict, total=False):
    """What the scorer knows about one bill (HAWB) at one moment."""

    hawb: str
    manifest: Record | None
    entry: Record | None
    shipper_history: Mapping[str, float] | None
    consignee_history: Mapping[str, float] | None


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
            code, value, weight = _code(v), _value(v), _weight(v)
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


def _usd(amount: float, currency: str) -> float:
    rate = USD_PER.get(currency)
    return amount * rate if rate is not None else NAN


def _value(v: ParcelView) -> float:
    e, m = v.get("entry"), v.get("manifest")
    if e is not None:
        return float(sum(line["value_usd"] for line in e["lines"]))
    if m is not None:
        return _usd(m["declared_value"], m["currency"])
    return NAN


def _weight(v: ParcelView) -> float:
    m = v.get("manifest")
    return float(m["weight_kg"]) if m is not None else NAN


def _code(v: ParcelView) -> str:
    """The most specific HS code known: the entry's first line, else the manifest's."""
    e, m = v.get("entry"), v.get("manifest")
    if e is not None:
        return e["lines"][0]["hts"]
    if m is not None:
        return m.get("hts") or ""
    return ""


def _description(v: ParcelView) -> str:
    e, m = v.get("entry"), v.get("manifest")
    if m is not None:
        return m["description"]
    if e is not None:
        return " ".join(line["description"] for line in e["lines"])
    return ""


def _is_business(name: str) -> float:
    return 1.0 if _BUSINESS & set(name.lower().replace(".", " ").replace(",", " ").split()) else 0.0


def _name_suspect(name: str) -> float:
    """Fictitious-looking consignee names: digits, a single token, or very short."""
    parts = name.split()
    return 1.0 if any(c.isdigit() for c in name) or len(parts) < 2 or len(name) < 5 else 0.0


def normalise_name(name: str) -> str:
    return " ".join("".join(c for c in name.lower() if c.isalnum() or c == " ").split())


def _row(v: ParcelView, refs: References) -> list[float]:
    m, e = v.get("manifest"), v.get("entry")
    mv = _usd(m["declared_value"], m["currency"]) if m is not None else NAN
    ev = float(sum(line["value_usd"] for line in e["lines"])) if e is not None else NAN
    value = ev if e is not None else mv
    weight = _weight(v)
    code = _code(v)
    if value > 0 and weight > 0:
        log_vpk = math.log(value / weight)
        vs_ref = log_vpk - refs.median_log_vpk(code) if code else NAN
    else:
        log_vpk = vs_ref = NAN
    desc = _description(v)
    lowered = desc.lower()
    words = hs.tokens(desc)
    raw_words = set(lowered.replace(",", " ").split())
    overlap = len(words & hs.code_tokens(code)) / len(words) if code and words else NAN
    party = m if m is not None else e
    assert party is not None
    shipper, consignee = party["shipper"], party["consignee"]
    quantity = float(sum(line["quantity"] for line in e["lines"])) if e is not None else NAN
    pieces = float(m["pieces"]) if m is not None else NAN
    if m is not None and e is not None:
        e_desc = hs.tokens(" ".join(line["description"] for line in e["lines"]))
        m_desc = hs.tokens(m["description"])
        union = m_desc | e_desc
        desc_mm = 1.0 - len(m_desc & e_desc) / len(union) if union else 0.0
        cons_mm = float(
            normalise_name(m["consignee"]["name"]) != normalise_name(e["consignee"]["name"])
        )
        m_hts = m.get("hts")
        hts_mm = float(m_hts[:4] != code[:4]) if m_hts else NAN
        pcs_mm = float(abs(quantity - pieces) > max(2.0, 0.5 * pieces))
        ratio = ev / mv if mv > 0 else NAN
    else:
        desc_mm = cons_mm = hts_mm = pcs_mm = ratio = NAN
    sh = v.get("shipper_history") or {}
    ch = v.get("consignee_history") or {}
    deliver = e.get("final_deliver_to") if e is not None else None
    return [
        float(m is not None),
        float(e is not None),
        value,
        mv,
        ev,
        ratio,
        weight,
        log_vpk,
        vs_ref,
        DE_MINIMIS_USD - value,
        float(0.85 * DE_MINIMIS_USD <= value < DE_MINIMIS_USD),
        float(code[:2]) if code else NAN,
        float(code[:4]) if code else NAN,
        float(hs.risk_group(code)) if code else NAN,
        float(hs.is_known(code)) if code else NAN,
        float(_ORIGIN_INDEX.get(shipper["country"], len(ORIGINS))),
        float(_ENTRY_TYPE_INDEX[e["entry_type"]]) if e is not None else NAN,
        pieces,
        float(len(e["lines"])) if e is not None else NAN,
        quantity,
        math.log(value / quantity) if value > 0 and quantity > 0 else NAN,
        float(bool(raw_words & hs.VAGUE_TERMS) and len(raw_words) <= 3),
        float(bool(raw_words & hs.BRAND_TERMS)),
        float(any(p in lowered for p in hs.COVER_PHRASES)),
        overlap,
        float(len(raw_words)),
        _is_business(shipper["name"]),
        _is_business(consignee["name"]),
        _name_suspect(consignee["name"]),
        desc_mm,
        cons_mm,
        hts_mm,
        pcs_mm,
        float(bool(e and e.get("listing_url"))),
        float(bool(e and e.get("marketplace"))),
        float(normalise_name(deliver) != normalise_name(consignee["address"])) if deliver else NAN,
        *(float(sh.get(k, NAN)) for k in SHIPPER_HISTORY),
        *(float(ch.get(k, NAN)) for k in CONSIGNEE_HISTORY),
    ]


def build_features(views: Sequence[ParcelView], refs: References) -> np.ndarray:
    """Views -> float32 matrix (len(views), len(FEATURES)); missing inputs are NaN."""
    out = np.empty((len(views), len(FEATURES)), dtype=np.float32)
    for i, v in enumerate(views):
        out[i] = _row(v, refs)
    return out
