"""Shipper and consignee history: bounded state and features, by the keys of parcel.py.

Pure functions over plain dicts. The worker keeps these dicts in Faust tables; the offline
data-set builder replays traffic through the very same functions in time order, so a model
is trained on exactly the history the worker will show it. Features describe the history
*before* the parcel being scored.

State stays bounded per entity: counters, sums and a capped set of short hashes for the
distinct counts, and the last few events counted (so a replay after a crash, which
at-least-once delivery allows, is not counted twice).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

from models import parcel
from models.parcel import ParcelView
from models.records import FINDINGS

DAY = 86_400.0
MAX_DISTINCT = 200  # distinct counts saturate here; enough to tell 1 from many
# events remembered per entity: covers what a crashed worker replays (its uncommitted
# batches) for every entity with fewer than this many events in that window
RECENT = 32
# holds remembered per shipper, so that an exam outcome finds the category and model of
# the hold it answers (exams follow holds by hours or days)
HELD = 128


def short(key: str, size: int = 4) -> str:
    return hashlib.blake2b(key.encode(), digest_size=size).hexdigest()


# A recent event is trusted to skip work (even a decision): 64 bits make a false match
# vanishingly rare (32 / 2**64 per lookup), where 32 would, at a billion parcels a year.
_EVENT_BYTES = 8


def _add_distinct(state: dict[str, Any], field: str, key: str) -> None:
    seen: list[str] = state.setdefault(field, [])
    h = short(key)
    if h not in seen and len(seen) < MAX_DISTINCT:
        seen.append(h)


def replayed(state: Mapping[str, Any] | None, event: str) -> bool:
    """Was this event (e.g. 'parcel:HAWB') already counted in this entity's history?"""
    return state is not None and short(event, _EVENT_BYTES) in state.get("recent", ())


def remember(state: dict[str, Any], event: str) -> dict[str, Any]:
    """Note an event as counted; the oldest is forgotten beyond RECENT."""
    state["recent"] = [*state.get("recent", ()), short(event, _EVENT_BYTES)][-RECENT:]
    return state


def shipper_features(state: Mapping[str, Any] | None, now: float) -> dict[str, float]:
    """History features of a shipper as of `now` (epoch seconds); empty for a new one."""
    if not state:
        return {
            "parcels": 0.0,
            "age_days": 0.0,
            "prior_holds": 0.0,
            "seized_narcotics": 0.0,
            "seized_ipr": 0.0,
            "undervalued": 0.0,
            "distinct_consignees": 0.0,
        }
    n = state.get("parcels", 0)  # a state may hold only seizures or holds so far
    mean = state["value_sum"] / n if n else math.nan
    var = state["value_sq"] / n - mean * mean if n else math.nan
    first = state.get("first_seen")  # None: no parcel of it seen yet
    return {
        "parcels": float(n),
        "age_days": max(0.0, (now - first) / DAY) if first is not None else 0.0,
        "value_mean": mean,
        "value_cv": math.sqrt(max(var, 0.0)) / mean if n and mean > 0 else math.nan,
        "distinct_consignees": float(len(state.get("consignees", ()))),
        "vague_share": state.get("vague", 0) / n if n else math.nan,
        "prior_holds": float(state.get("holds", 0)),
        "seized_narcotics": float(state.get("seized_narcotics", 0)),
        "seized_ipr": float(state.get("seized_ipr", 0)),
        "undervalued": float(state.get("undervalued", 0)),
    }


def _shipper(state: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of a shipper's state with every counter present (a state may so far hold
    only seizures, holds or remembered events, and then no first_seen)."""
    counters = {"parcels": 0, "value_sum": 0.0, "value_sq": 0.0, "vague": 0, "holds": 0}
    return {**counters, **(state or {})}


def observe_shipper_parcel(
    state: dict[str, Any] | None, view: ParcelView, consignee: str, now: float
) -> dict[str, Any]:
    """Count a parcel (first revision) in its shipper's history: its value in USD, its
    consignee, whether its description is vague."""
    value = parcel.value_usd(view)
    s = _shipper(state)
    s["parcels"] += 1
    # unknown until a parcel is seen: never infinity, which a JSON table stores as null
    first = s.get("first_seen")
    s["first_seen"] = now if first is None else min(first, now)
    s["last_seen"] = max(s.get("last_seen", now), now)
    if value == value:  # not NaN
        s["value_sum"] += value
        s["value_sq"] += value * value
    s["vague"] += int(parcel.vague(parcel.description(view)))
    s["consignees"] = list(s.get("consignees", []))
    _add_distinct(s, "consignees", consignee)
    return s


def observe_hold(
    state: dict[str, Any] | None, hawb: str, category: str, model_version: str
) -> dict[str, Any]:
    """A hold published for one of the shipper's parcels: counted, and remembered with its
    category and model (the latest hold of a bill replaces an earlier revision's)."""
    s = _shipper(state)
    s["holds"] += 1
    kept = [h for h in s.get("held", ()) if h[0] != hawb]
    s["held"] = [*kept, [hawb, category, model_version]][-HELD:]
    return s


def held(state: Mapping[str, Any] | None, hawb: str) -> tuple[str, str] | None:
    """(category, model version) of the bill's hold, if the shipper remembers one."""
    for h, category, model_version in (state or {}).get("held", ()):
        if h == hawb:
            return category, model_version
    return None


def observe_outcome(state: dict[str, Any] | None, outcome: str) -> dict[str, Any]:
    """A disposition: seizures raise the risk of the entity's next parcels."""
    s = dict(state) if state else {}
    if outcome in FINDINGS:  # counted under the outcome's own name
        s[outcome] = s.get(outcome, 0) + 1
        s["seizures"] = s.get("seizures", 0) + 1
    return s


def consignee_features(
    state: Mapping[str, Any] | None, now: float, hawb: str = ""
) -> dict[str, float]:
    """A consignee's history as of `now`. `value_today` is what its other parcels of the
    day (not `hawb` itself, which a rescore has already counted) declared, in USD: the
    Section 321 aggregate a policy rule adds this parcel's value to."""
    if not state:
        return {
            "parcels": 0.0,
            "parcels_today": 0.0,
            "value_today": 0.0,
            "distinct_shippers": 0.0,
            "prior_seizures": 0.0,
        }
    today = state.get("day") == int(now // DAY)
    values: Mapping[str, float] = state.get("values_today", {}) if today else {}
    others = sum(v for h, v in values.items() if h != short(hawb))
    return {
        "parcels": float(state.get("parcels", 0)),
        "parcels_today": float(state.get("today", 0)) if today else 0.0,
        "value_today": others + (state.get("value_today_more", 0.0) if today else 0.0),
        "distinct_shippers": float(len(state.get("shippers", ()))),
        "prior_seizures": float(state.get("seizures", 0)),
    }


def observe_consignee_parcel(
    state: dict[str, Any] | None, view: ParcelView, shipper: str, now: float
) -> dict[str, Any]:
    """Count a parcel (first revision) in its consignee's history: its shipper, and its
    declared value among the day's (per parcel, so a rescore is not counted twice; beyond
    MAX_DISTINCT parcels a day, in one sum)."""
    s: dict[str, Any] = dict(state) if state else {"parcels": 0, "today": 0, "day": int(now // DAY)}
    day = int(now // DAY)
    if s.get("day") != day:
        s["day"], s["today"], s["values_today"], s["value_today_more"] = day, 0, {}, 0.0
    s["parcels"] = s.get("parcels", 0) + 1
    s["today"] = s.get("today", 0) + 1
    s["shippers"] = list(s.get("shippers", []))
    _add_distinct(s, "shippers", shipper)
    value = parcel.value_usd(view)
    if value == value:  # not NaN
        values = dict(s.get("values_today", {}))
        if len(values) < MAX_DISTINCT:
            values[short(view["hawb"])] = value
        else:
            s["value_today_more"] = s.get("value_today_more", 0.0) + value
        s["values_today"] = values
    return s
