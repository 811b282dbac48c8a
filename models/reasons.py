"""Reasons: why a parcel scored high, in words an analyst can act on.

Attribution by occlusion: for each flagged parcel, each fact in turn is made typical (its
features set to their training medians) and the parcel is rescored; the facts whose
removal drops the score most are candidate reasons. A fact is the group of features one
sentence is about (the declared value, the threshold gap and the entry/manifest ratio are
one value), so correlated features do not hide each other's contribution. The perturbed
rows of a batch go through one model call per category explained, which runs only that
category's trees (the parcels' own scores come from the scoring pass), and only values
that can make a reason are perturbed: a missing (NaN) value, a value already typical, a
feature without a sentence or one whose sentence is no evidence for the category never is
one (its sentence is made first; model rows cost more than sentences).

A reason is the analyst's case for opening the parcel, so a candidate is kept only if it
is a true sentence about a value that exists and is evidence for the category being
explained: no rendered NaN, no zero count offered as evidence ("first parcel from this
shipper" is a risk, "0 distinct consignees" is not), every HS code cited with its words
from the nomenclature, and no counterfeit-prone heading explaining a fentanyl review.
Otherwise the next contributing feature is tried; when none is left, the reason says
honestly that the overall pattern resembles past cases of the category.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from models import nomenclature as hs
from models.features import INDEX, ORIGINS, References
from models.history import MAX_DISTINCT
from models.parcel import DE_MINIMIS_USD, ParcelView, description, hs_code
from models.records import CATEGORIES

MIN_DROP = 0.002  # score points; smaller contributions are noise, not reasons

ALL = frozenset(CATEGORIES)
FENTANYL = frozenset({"fentanyl"})
COUNTERFEIT = frozenset({"counterfeit"})
UNDERVALUATION = frozenset({"undervaluation"})

# when no single feature makes a case: honest about what the score rests on
FALLBACK = {
    "fentanyl": "overall pattern resembles past narcotics seizures",
    "counterfeit": "overall pattern resembles past counterfeit seizures",
    "undervaluation": "overall pattern resembles past undervaluation findings",
}
# design.md: China and Hong Kong account for ~75-90% of counterfeit MSRP seized
COUNTERFEIT_ORIGINS = frozenset({"CN", "HK"})
NEAR_THRESHOLD = 0.85  # the share of the de minimis threshold where bunching begins
VPK_RATIO = 1.5  # a value per kg this many times below its median is worth saying
NEW_SHIPPER_DAYS = 30
FEW_PARCELS = 5


class Predicts(Protocol):
    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...

    def predict_label(self, X: np.ndarray, j: int) -> np.ndarray: ...


@dataclass(frozen=True)
class Reason:
    """A sentence and the categories it is evidence for."""

    text: str
    supports: frozenset[str]


@dataclass(frozen=True)
class Facts:
    """What a sentence may use: one parcel's feature row and view, and the model's
    reference statistics (medians by HS heading, feature medians of the training data)."""

    row: np.ndarray
    view: ParcelView
    refs: References
    medians: Sequence[float] = ()

    def num(self, name: str) -> float | None:
        """The feature's value, or None when it is missing: never rendered as a number."""
        x = float(self.row[INDEX[name]])
        return x if math.isfinite(x) else None

    def typical(self, name: str) -> float | None:
        """The feature's training median, or None when unknown."""
        if not self.medians:
            return None
        x = float(self.medians[INDEX[name]])
        return x if math.isfinite(x) else None

    def flag(self, name: str) -> bool:
        return self.num(name) == 1.0

    def unflagged(self, name: str) -> bool:
        return self.num(name) == 0.0


Template = Callable[[Facts], Reason | None]


def explain(
    model: Predicts,
    views: Sequence[ParcelView],
    X: np.ndarray,
    label_idx: Sequence[int],
    medians: Sequence[float],
    refs: References,
    top: int = 3,
    base: np.ndarray | None = None,
) -> list[list[str]]:
    """Up to `top` reasons per parcel for the category `label_idx` names, strongest first.

    `base` is each parcel's score for that category when the caller already has it (the
    scorer does), which leaves one model call per category for the whole batch.
    """
    n, _f = X.shape
    labels = np.asarray(label_idx, dtype=np.intp)
    if base is None:
        base = model.predict_proba(X)[np.arange(n), labels]
    med = np.asarray(medians, dtype=np.float32)
    movable = np.isfinite(X) & (med[None, :] != X)  # (n, f): values occlusion can change
    cand = (movable[:, None, :] & _MEMBERS[None, :, :]).any(axis=2)  # (n, groups)
    # a fact is perturbed only if its sentence exists and speaks for the category explained:
    # no other can be a reason, so its drop need not be known (the model rows are the cost)
    facts = [Facts(X[i], views[i], refs, medians) for i in range(n)]
    kept: list[tuple[int, int, str]] = []
    for i, g in zip(*np.nonzero(cand), strict=True):
        r = _say(GROUPS[g][0], facts[i])
        if r is not None and CATEGORIES[labels[i]] in r.supports:
            kept.append((i, g, r.text))
    rows = np.array([i for i, _g, _t in kept], dtype=np.intp)
    groups = np.array([g for _i, g, _t in kept], dtype=np.intp)
    texts_of = [t for _i, _g, t in kept]
    drops = np.empty(0)
    if len(rows):
        change = movable[rows] & _MEMBERS[groups]
        perturbed = np.where(change, med[None, :], X[rows])
        probs = np.empty(len(rows))
        for j in np.unique(labels[rows]).tolist():  # each row only for the category it explains
            of_j = labels[rows] == j
            probs[of_j] = model.predict_label(perturbed[of_j], j)
        drops = base[rows] - probs
    out: list[list[str]] = []
    start = np.searchsorted(rows, np.arange(n + 1))  # rows are sorted by parcel
    for i in range(n):
        mine = np.arange(start[i], start[i + 1])
        texts: list[str] = []
        for k in mine[np.argsort(-drops[mine], kind="stable")]:
            if drops[k] < MIN_DROP or len(texts) >= top:
                break
            if texts_of[k] not in texts:
                texts.append(texts_of[k])
        out.append(texts or [FALLBACK[CATEGORIES[labels[i]]]])
    return out


FEATURE_NAMES = list(INDEX)


def reason(name: str, facts: Facts) -> Reason | None:
    """The sentence a feature makes for this parcel, or None when it makes no case."""
    template = TEMPLATES.get(name)
    if template is None or facts.num(name) is None:
        return None  # a missing value is no case, whatever else the parcel shows
    return _say(template, facts)


def _say(template: Template, facts: Facts) -> Reason | None:
    try:
        return template(facts)
    except (ValueError, OverflowError, KeyError, IndexError, TypeError):
        return None  # a record without the part a sentence quotes: no sentence


def describe(
    name: str,
    row: np.ndarray,
    view: ParcelView,
    refs: References,
    medians: Sequence[float] = (),
) -> str:
    """One feature of one parcel in plain words ('' when it makes no case)."""
    r = reason(name, Facts(row, view, refs, medians))
    return r.text if r is not None else ""


# --- sentences --------------------------------------------------------------------------


def _usd(x: float) -> str:
    if not math.isfinite(x):
        raise ValueError("a missing value is not a number to show")
    return f"${x:,.2f}"


def _times(x: float) -> str:
    return f"{x:,.0f}x" if x >= 10 else f"{x:.1f}x"


def _count(n: float, one: str, many: str | None = None) -> str:
    k = round(n)
    return f"{k:,} {one if k == 1 else (many or one + 's')}"


def _clip(text: str, limit: int = 60) -> str:
    """A description as a reason quotes it: short enough that a hold's reasons stay within
    the hold schema's 500 characters however long the record's text is."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _median_scope(code: str, refs: References) -> str:
    """What the reference median of value per kg was taken over, in words."""
    if code[:4] in refs.heading_log_vpk and (cited := hs.cite(code[:4])):
        return cited
    if code[:2] in refs.chapter_log_vpk and (words := hs.title(code[:2])):
        return f"HS chapter {code[:2]}, {words}"
    return "all parcels"


def _value_per_kg(f: Facts) -> Reason | None:
    log_vpk = f.num("log_value_per_kg")
    if log_vpk is None:
        return None
    code = hs_code(f.view)
    vpk = math.exp(log_vpk)
    ratio = math.exp(f.refs.median_log_vpk(code) - log_vpk)
    if not math.isfinite(ratio) or ratio < VPK_RATIO:
        return None  # at or above the median: cheap goods are no case, dear ones neither
    scope = _median_scope(code, f.refs)
    return Reason(
        f"declared {_usd(vpk)}/kg, {_times(ratio)} below the median for {scope}",
        UNDERVALUATION | COUNTERFEIT,
    )


def _declared(f: Facts) -> Reason | None:
    """The declared value, when it says something: bunched under the threshold, or far
    below what a typical parcel declares."""
    value = f.num("declared_value_usd")
    if value is None:
        return None
    if NEAR_THRESHOLD * DE_MINIMIS_USD <= value < DE_MINIMIS_USD:
        return Reason(
            f"declared {_usd(value)}, {_usd(DE_MINIMIS_USD - value)} under the "
            f"{_usd(DE_MINIMIS_USD)} de minimis threshold",
            UNDERVALUATION,
        )
    typical = f.typical("declared_value_usd")
    if typical is not None and value < typical / 3:
        return Reason(
            f"declared only {_usd(value)}, where a typical parcel declares {_usd(typical)}",
            UNDERVALUATION,
        )
    return None


def _entry_vs_manifest(f: Facts) -> Reason | None:
    """The broker entered less than the carrier manifested; otherwise the value itself."""
    mv, ev = f.num("manifest_value_usd"), f.num("entry_value_usd")
    if mv is not None and ev is not None and ev < 0.95 * mv:
        return Reason(f"manifest says {_usd(mv)}, entry says {_usd(ev)}", UNDERVALUATION)
    return _declared(f)


def _vs_shipper(f: Facts) -> Reason | None:
    value, mean = f.num("declared_value_usd"), f.num("shipper_value_mean")
    if value is None or mean is None or not value < mean / 2:
        return None
    return Reason(
        f"declared {_usd(value)}, where this shipper's parcels average {_usd(mean)}",
        UNDERVALUATION,
    )


def _hs_group(f: Facts) -> Reason | None:
    group = f.num("hs_risk_group")
    cited = hs.cite(hs_code(f.view))
    if group is None or cited is None:
        return None
    if group == 1:
        return Reason(f"{cited}: a counterfeit-prone heading", COUNTERFEIT)
    if group == 2:
        return Reason(f"{cited}: where tablet presses and their parts are classified", FENTANYL)
    if group == 3:
        return Reason(f"{cited}: a subheading of fentanyl precursor chemicals", FENTANYL)
    return None  # an ordinary heading is no case by itself


def _origin(f: Facts) -> Reason | None:
    idx = f.num("origin")
    country = ORIGINS[int(idx)] if idx is not None and int(idx) < len(ORIGINS) else None
    if country not in COUNTERFEIT_ORIGINS:
        return None
    return Reason(f"origin {country}, where most seized counterfeits come from", COUNTERFEIT)


def _overlap(f: Facts) -> Reason | None:
    overlap, cited = f.num("desc_hs_overlap"), hs.cite(hs_code(f.view))
    desc = _clip(description(f.view))
    if overlap != 0.0 or cited is None or not desc:
        return None
    return Reason(f"description '{desc}' shares no word with {cited}", ALL)


def _hs_unknown(f: Facts) -> Reason | None:
    code = hs_code(f.view)
    if not f.unflagged("hs_known") or not code:
        return None
    shown = f"{code[:4]}.{code[4:6]}" if len(code) >= 6 else code
    return Reason(f"HS code {shown} does not exist in the HS nomenclature", ALL)


def _hts_mismatch(f: Facts) -> Reason | None:
    m, e = f.view.get("manifest"), f.view.get("entry")
    if not f.flag("hts_mismatch") or m is None or e is None:
        return None
    said, entered = hs.cite(m.get("hts") or ""), hs.cite(e["lines"][0]["hts"])
    if said and entered:
        return Reason(f"manifest files {said}, where the entry files {entered}", ALL)
    return Reason("manifest and entry give different HS headings", ALL)


def _desc_mismatch(f: Facts) -> Reason | None:
    share = f.num("desc_mismatch")
    m = f.view.get("manifest")
    if share is None or share < 0.5 or m is None:
        return None
    entry = _clip(description(f.view))  # the entry's lines: the entry speaks for the parcel
    return Reason(f"manifest describes '{_clip(m['description'])}', entry '{entry}'", ALL)


def _pieces(f: Facts) -> Reason | None:
    pieces, quantity = f.num("pieces"), f.num("quantity")
    if not f.flag("pieces_mismatch") or pieces is None or quantity is None:
        return None
    return Reason(
        f"manifest counts {_count(pieces, 'piece')}, entry {_count(quantity, 'item')}", ALL
    )


def _consignees_differ(f: Facts) -> Reason | None:
    m, e = f.view.get("manifest"), f.view.get("entry")
    if not f.flag("consignee_mismatch") or m is None or e is None:
        return None
    return Reason(
        f"manifest names consignee '{m['consignee']['name']}', entry '{e['consignee']['name']}'",
        ALL,
    )


def _flag(text: str, name: str, supports: frozenset[str], when: float = 1.0) -> Template:
    def check(f: Facts) -> Reason | None:
        if f.num(name) != when:
            return None
        return Reason(text.format(desc=_clip(description(f.view))), supports)

    return check


def _new_shipper(f: Facts) -> Reason | None:
    """A first parcel is the risk itself; a young or little-known shipper is one too, an
    established one is not."""
    parcels, age = f.num("shipper_parcels"), f.num("shipper_age_days")
    if parcels == 0:
        return Reason("first parcel from this shipper", ALL)
    if parcels is None:
        return None
    if age is not None and age < 1:
        return Reason("shipper first seen less than a day ago", ALL)
    if age is not None and age < NEW_SHIPPER_DAYS:
        return Reason(f"shipper first seen {_count(age, 'day')} ago", ALL)
    if parcels <= FEW_PARCELS:
        return Reason(f"only {_count(parcels, 'parcel')} from this shipper so far", ALL)
    return None


def _seizures(what: str, many: str, supports: frozenset[str], name: str) -> Template:
    def text(f: Facts) -> Reason | None:
        n = f.num(name)
        if n is None or n < 1:
            return None  # no seizure is no evidence
        return Reason(f"shipper had {_count(n, what, many)}", supports)

    return text


def _few_consignees(f: Facts) -> Reason | None:
    """Many parcels to a handful of addresses: structuring under the threshold."""
    parcels, distinct = f.num("shipper_parcels"), f.num("shipper_distinct_consignees")
    if parcels is None or distinct is None or parcels < 3:
        return None
    if distinct < 1 or distinct >= MAX_DISTINCT or distinct > parcels / 3:
        return None
    return Reason(
        f"shipper's {_count(parcels, 'parcel')} went to only {_count(distinct, 'consignee')}",
        UNDERVALUATION,
    )


def _vague_share(f: Facts) -> Reason | None:
    share = f.num("shipper_vague_share")
    if share is None or share < 0.25:
        return None
    return Reason(f"{share:.0%} of the shipper's parcels have vague descriptions", ALL)


def _consignee_today(f: Facts) -> Reason | None:
    n = f.num("consignee_parcels_today")
    if n is None or n < 2:
        return None
    return Reason(f"consignee has had {_count(n, 'parcel')} today", UNDERVALUATION)


def _consignee_shippers(f: Facts) -> Reason | None:
    n = f.num("consignee_distinct_shippers")
    if n is None or n < 3:
        return None
    many = f"{MAX_DISTINCT} or more" if n >= MAX_DISTINCT else f"{n:,.0f}"
    return Reason(f"consignee receives parcels from {many} different shippers", UNDERVALUATION)


def _consignee_seizures(f: Facts) -> Reason | None:
    n = f.num("consignee_prior_seizures")
    if n is None or n < 1:
        return None
    return Reason(f"consignee had {_count(n, 'prior seizure')}", ALL)


def _filer(f: Facts) -> Reason | None:
    """The entry's filer, when its examined entries were violative more often than a
    typical filer's: said with its own record (k of n), never with no violation or with
    the smoothed rate alone, which a handful of exams hardly moves."""
    rate, typical = f.num("filer_violation_rate"), f.typical("filer_violation_rate")
    record = f.view.get("filer_history") or {}
    n, k = record.get("examined", 0.0), record.get("violative", 0.0)
    if rate is None or k < 1 or (typical is not None and rate <= typical):
        return None
    code = f.view["entry"]["filer_code"]  # type: ignore[index]  # no entry: no sentence
    entries = "entry" if n == 1 else "entries"
    return Reason(f"filer {code}: {k:,.0f} of {n:,.0f} examined {entries} violative", ALL)


# features without a sentence here (weight, pieces, listing URL, ...) are never reasons:
# a fact that makes no case for opening a parcel is not shown to the analyst
TEMPLATES: dict[str, Template] = {
    "value_per_kg_vs_hs_median": _value_per_kg,
    "log_value_per_kg": _value_per_kg,
    "entry_to_manifest_value_ratio": _entry_vs_manifest,
    "entry_value_usd": _entry_vs_manifest,
    "manifest_value_usd": _entry_vs_manifest,
    "threshold_gap_usd": _entry_vs_manifest,
    "just_under_threshold": _entry_vs_manifest,
    "declared_value_usd": _entry_vs_manifest,
    "shipper_value_mean": _vs_shipper,
    "hs_risk_group": _hs_group,
    "hs_heading": _hs_group,
    "hs_chapter": _hs_group,
    "hs_known": _hs_unknown,
    "origin": _origin,
    "desc_hs_overlap": _overlap,
    "desc_vague": _flag("vague description '{desc}'", "desc_vague", ALL),
    "desc_words": _flag("terse description '{desc}'", "desc_words", ALL),
    "desc_brand": _flag("brand term in description '{desc}'", "desc_brand", COUNTERFEIT),
    "desc_cover_phrase": _flag(
        "description '{desc}' is a known cover for narcotics", "desc_cover_phrase", FENTANYL
    ),
    "consignee_name_suspect": _flag(
        "consignee name looks fictitious", "consignee_name_suspect", ALL
    ),
    "shipper_business": _flag(
        "shipper is a private person, not a business", "shipper_business", FENTANYL, 0.0
    ),
    "consignee_business": _flag("sent to a private residence", "consignee_business", FENTANYL, 0.0),
    "deliver_to_differs": _flag(
        "final delivery address differs from the consignee's", "deliver_to_differs", ALL
    ),
    "desc_mismatch": _desc_mismatch,
    "consignee_mismatch": _consignees_differ,
    "hts_mismatch": _hts_mismatch,
    "pieces_mismatch": _pieces,
    "shipper_age_days": _new_shipper,
    "shipper_parcels": _new_shipper,
    "shipper_seized_narcotics": _seizures(
        "prior narcotics seizure", "prior narcotics seizures", FENTANYL, "shipper_seized_narcotics"
    ),
    "shipper_seized_ipr": _seizures(
        "prior counterfeit seizure", "prior counterfeit seizures", COUNTERFEIT, "shipper_seized_ipr"
    ),
    "shipper_undervalued": _seizures(
        "prior undervaluation finding",
        "prior undervaluation findings",
        UNDERVALUATION,
        "shipper_undervalued",
    ),
    "shipper_distinct_consignees": _few_consignees,
    "shipper_vague_share": _vague_share,
    "consignee_parcels_today": _consignee_today,
    "consignee_distinct_shippers": _consignee_shippers,
    "consignee_prior_seizures": _consignee_seizures,
    "filer_violation_rate": _filer,
}
# the facts: features that share a sentence are occluded together
GROUPS: tuple[tuple[Template, tuple[str, ...]], ...] = tuple(
    (t, tuple(name for name, u in TEMPLATES.items() if u is t))
    for t in dict.fromkeys(TEMPLATES.values())
)
_MEMBERS = np.array([[name in names for name in FEATURE_NAMES] for _t, names in GROUPS])
