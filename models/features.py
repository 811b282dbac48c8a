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
from typing import Any

import numpy as np

from models import nomenclature as hs
from models import parcel
from models.parcel import DE_MINIMIS_USD, ParcelView

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


def _row(v: ParcelView, refs: References) -> list[float]:
    m, e = v.get("manifest"), v.get("entry")
    mv = parcel.manifest_value_usd(m) if m is not None else NAN
    ev = parcel.entry_value_usd(e) if e is not None else NAN
    value = parcel.value_usd(v)
    weight = parcel.weight_kg(v)
    code = parcel.hs_code(v)
    if value > 0 and weight > 0:
        log_vpk = math.log(value / weight)
        vs_ref = log_vpk - refs.median_log_vpk(code) if code else NAN
    else:
        log_vpk = vs_ref = NAN
    desc = parcel.description(v)
    lowered = desc.lower()
    words = hs.tokens(desc)
    raw_words = parcel.words(desc)
    overlap = len(words & hs.code_tokens(code)) / len(words) if code and words else NAN
    shipper, consignee = parcel.parties(v)
    quantity = float(sum(line["quantity"] for line in e["lines"])) if e is not None else NAN
    pieces = float(m["pieces"]) if m is not None else NAN
    if m is not None and e is not None:
        e_desc = hs.tokens(" ".join(line["description"] for line in e["lines"]))
        m_desc = hs.tokens(m["description"])
        union = m_desc | e_desc
        desc_mm = 1.0 - len(m_desc & e_desc) / len(union) if union else 0.0
        cons_mm = float(
            parcel.normalise(m["consignee"]["name"]) != parcel.normalise(e["consignee"]["name"])
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
        float(parcel.vague(desc)),
        float(bool(raw_words & hs.BRAND_TERMS)),
        float(any(p in lowered for p in hs.COVER_PHRASES)),
        overlap,
        float(len(raw_words)),
        float(parcel.is_business(shipper["name"])),
        float(parcel.is_business(consignee["name"])),
        _name_suspect(consignee["name"]),
        desc_mm,
        cons_mm,
        hts_mm,
        pcs_mm,
        float(bool(e and e.get("listing_url"))),
        float(bool(e and e.get("marketplace"))),
        float(parcel.normalise(deliver) != parcel.normalise(consignee["address"]))
        if deliver
        else NAN,
        *(float(sh.get(k, NAN)) for k in SHIPPER_HISTORY),
        *(float(ch.get(k, NAN)) for k in CONSIGNEE_HISTORY),
        float((v.get("filer_history") or {}).get("violation_rate", NAN)),
    ]


def build_features(views: Sequence[ParcelView], refs: References) -> np.ndarray:
    """Views -> float32 matrix (len(views), len(FEATURES)); missing inputs are NaN.

    The rows are Python floats, converted to float32 in one pass over the batch."""
    if not views:
        return np.empty((0, len(FEATURES)), dtype=np.float32)
    return np.array([_row(v, refs) for v in views], dtype=np.float32)
