"""Reasons: why a parcel scored high, in words an analyst can act on.

Attribution by occlusion: for each flagged parcel, each feature in turn is set to its
typical (training median) value and the parcel is rescored; the features whose removal
drops the score most are the parcel's reasons. All perturbed rows of a batch go through
one `predict_proba` call, so explaining costs one extra model call per batch, and only for
the few flagged parcels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from models import nomenclature as hs
from models.features import INDEX, ORIGINS, References
from models.model import ParcelRiskModel
from models.parcel import DE_MINIMIS_USD, ParcelView, description, hs_code

MIN_DROP = 0.002  # score points; smaller contributions are noise, not reasons


def explain(
    model: ParcelRiskModel,
    views: Sequence[ParcelView],
    X: np.ndarray,
    label_idx: Sequence[int],
    medians: Sequence[float],
    refs: References,
    top: int = 3,
) -> list[list[str]]:
    n, f = X.shape
    base = model.predict_proba(X)[np.arange(n), label_idx]
    perturbed = np.repeat(X, f, axis=0).reshape(n, f, f)
    med = np.asarray(medians, dtype=np.float32)
    diag = np.arange(f)
    perturbed[:, diag, diag] = med  # row (i, j) = parcel i with feature j made typical
    probs = model.predict_proba(perturbed.reshape(n * f, f)).reshape(n, f, -1)
    drops = base[:, None] - probs[np.arange(n), :, label_idx]
    out: list[list[str]] = []
    for i in range(n):
        texts: list[str] = []
        for j in np.argsort(-drops[i]):
            if drops[i, j] < MIN_DROP or len(texts) >= top:
                break
            text = describe(FEATURE_NAMES[j], X[i], views[i], refs)
            if text and text not in texts:
                texts.append(text)
        out.append(texts or ["overall pattern of the parcel resembles past seizures"])
    return out


FEATURE_NAMES = list(INDEX)


def _v(row: np.ndarray, name: str) -> float:
    return float(row[INDEX[name]])


def _vpk(row: np.ndarray, view: ParcelView, refs: References) -> str:
    vpk = math.exp(_v(row, "log_value_per_kg"))
    code = hs_code(view)
    median = math.exp(refs.median_log_vpk(code))
    ratio = median / vpk if vpk > 0 else math.inf
    what = f"HS {code[:4]}" if code else "parcels of unknown HS code"
    if ratio >= 1:
        return f"declared ${vpk:,.2f}/kg, {ratio:,.0f}x below the median for {what}"
    return f"declared ${vpk:,.2f}/kg, {1 / ratio:,.0f}x above the median for {what}"


def _mismatch_value(row: np.ndarray, view: ParcelView, refs: References) -> str:
    return (
        f"manifest says ${_v(row, 'manifest_value_usd'):,.2f}, "
        f"entry says ${_v(row, 'entry_value_usd'):,.2f}"
    )


def _threshold(row: np.ndarray, view: ParcelView, refs: References) -> str:
    value = _v(row, "declared_value_usd")
    if value < DE_MINIMIS_USD:
        return (
            f"declared ${value:,.2f}, ${DE_MINIMIS_USD - value:,.2f} under the de minimis threshold"
        )
    return f"declared ${value:,.2f}"


def _hs_group(row: np.ndarray, view: ParcelView, refs: References) -> str:
    code = hs_code(view)
    group = {
        1: "counterfeit-prone heading",
        2: "tablet presses or their parts",
        3: "fentanyl precursor chemicals",
    }.get(int(_v(row, "hs_risk_group")), "")
    return f"HS {code[:4]}.{code[4:6]}: {group}" if group else f"HS {code[:4]}.{code[4:6]}"


def _origin(row: np.ndarray, view: ParcelView, refs: References) -> str:
    idx = int(_v(row, "origin"))
    return f"origin {ORIGINS[idx] if idx < len(ORIGINS) else 'other country'}"


def _overlap(row: np.ndarray, view: ParcelView, refs: References) -> str:
    code, desc = hs_code(view), description(view)
    desc = desc if len(desc) <= 60 else desc[:59] + "…"  # a reason fits on a hold (<= 500)
    return f"description '{desc}' does not match HS {code[:6]} ({hs.describe(code)[:60]})"


def _count(template: str, name: str) -> Callable[[np.ndarray, ParcelView, References], str]:
    def text(row: np.ndarray, view: ParcelView, refs: References) -> str:
        x = _v(row, name)
        return template.format(x=x) if not math.isnan(x) else ""

    return text


def _flag(text: str, name: str, when: float = 1.0) -> Callable[..., str]:
    def check(row: np.ndarray, view: ParcelView, refs: References) -> str:
        return text.format(desc=description(view)) if _v(row, name) == when else ""

    return check


TEMPLATES: dict[str, Callable[[np.ndarray, ParcelView, References], str]] = {
    "value_per_kg_vs_hs_median": _vpk,
    "log_value_per_kg": _vpk,
    "entry_to_manifest_value_ratio": _mismatch_value,
    "entry_value_usd": _mismatch_value,
    "threshold_gap_usd": _threshold,
    "just_under_threshold": _threshold,
    "declared_value_usd": _threshold,
    "hs_risk_group": _hs_group,
    "hs_heading": _hs_group,
    "hs_chapter": _hs_group,
    "origin": _origin,
    "desc_hs_overlap": _overlap,
    "desc_vague": _flag("vague description '{desc}'", "desc_vague"),
    "desc_brand": _flag("brand term in description '{desc}'", "desc_brand"),
    "desc_cover_phrase": _flag(
        "description '{desc}' is a known cover for narcotics", "desc_cover_phrase"
    ),
    "consignee_name_suspect": _flag("consignee name looks fictitious", "consignee_name_suspect"),
    "shipper_business": _flag(
        "shipper is a private person, not a business", "shipper_business", 0.0
    ),
    "consignee_business": _flag("sent to a private residence", "consignee_business", 0.0),
    "desc_mismatch": _count("manifest and entry describe different goods", "desc_mismatch"),
    "consignee_mismatch": _flag(
        "manifest and entry name different consignees", "consignee_mismatch"
    ),
    "hts_mismatch": _flag("manifest and entry give different HS headings", "hts_mismatch"),
    "pieces_mismatch": _flag("piece count differs between manifest and entry", "pieces_mismatch"),
    "shipper_age_days": _count("shipper first seen {x:.0f} days ago", "shipper_age_days"),
    "shipper_parcels": _count("shipper has sent {x:.0f} parcels so far", "shipper_parcels"),
    "shipper_seized_narcotics": _count(
        "shipper had {x:.0f} narcotics seizures", "shipper_seized_narcotics"
    ),
    "shipper_seized_ipr": _count("shipper had {x:.0f} counterfeit seizures", "shipper_seized_ipr"),
    "shipper_undervalued": _count(
        "shipper had {x:.0f} undervaluation findings", "shipper_undervalued"
    ),
    "shipper_distinct_consignees": _count(
        "shipper sends to {x:.0f} distinct consignees", "shipper_distinct_consignees"
    ),
    "shipper_vague_share": _count(
        "{x:.0%} of the shipper's parcels have vague descriptions", "shipper_vague_share"
    ),
    "consignee_parcels_today": _count(
        "{x:.0f} parcels to this consignee today", "consignee_parcels_today"
    ),
    "consignee_distinct_shippers": _count(
        "consignee receives from {x:.0f} distinct shippers", "consignee_distinct_shippers"
    ),
    "consignee_prior_seizures": _count(
        "consignee had {x:.0f} prior seizures", "consignee_prior_seizures"
    ),
    "manifest_value_usd": _threshold,
    "desc_words": _flag("terse description '{desc}'", "desc_words", 1.0),
    "has_entry": _flag("no entry filed yet (manifest only)", "has_entry", 0.0),
    "has_manifest": _flag("entry without a carrier manifest", "has_manifest", 0.0),
    "hs_known": _flag("HS code not in the HS 2022 nomenclature", "hs_known", 0.0),
    "has_listing_url": _flag("no marketplace listing given", "has_listing_url", 0.0),
    "deliver_to_differs": _flag(
        "final delivery address differs from the consignee's", "deliver_to_differs"
    ),
    "weight_kg": _count("declared weight {x:.2f} kg", "weight_kg"),
    "log_unit_value": lambda row, view, refs: (
        f"unit value ${math.exp(_v(row, 'log_unit_value')):,.2f}"
        if not math.isnan(_v(row, "log_unit_value"))
        else ""
    ),
    "consignee_parcels": _count("consignee has received {x:.0f} parcels", "consignee_parcels"),
    "shipper_value_mean": _count("shipper's parcels average ${x:,.2f}", "shipper_value_mean"),
}


def describe(name: str, row: np.ndarray, view: ParcelView, refs: References) -> str:
    """One feature of one parcel in plain words ('' when there is nothing to say)."""
    template = TEMPLATES.get(name)
    if template is not None:
        try:
            return template(row, view, refs)
        except (ValueError, OverflowError, KeyError, IndexError):
            pass
    return ""  # a feature with nothing to say in plain words is not listed as a reason
