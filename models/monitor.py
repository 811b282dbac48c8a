"""What `parcel-risk monitor` shows, from the decisions and dispositions themselves.

For each model that decided parcels (serving) or scored them beside it (shadow): how many
decisions, the share of each action per category, drift of its scores and watched features
against its training reference, and hit rates of its holds among the examined parcels (a
shadow's "holds" are those it would have made: only parcels examined anyway count). Then,
where a shadow scored, how often and how it disagreed with the serving model.

Read from the topics, the figures cover every worker's parcels at once. A shadow's feature
drift is measured on the served feature vectors (the same as its own unless it was trained
against other reference medians).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from models.drift import Reference, psi
from models.features import INDEX
from models.records import CATEGORIES, FINDINGS

Row = tuple[Mapping[str, Any], Mapping[str, Any]]  # (the decision, this model's view of it)


def _views(decisions: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[Row]]:
    """(role, version) -> its decisions, each with the part that is this model's."""
    out: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for d in decisions:
        out["serving", d["model_version"]].append((d, d))
        if d.get("shadow"):
            out["shadow", d["shadow"]["model_version"]].append((d, d["shadow"]))
    return out


def _actions(rows: list[Row]) -> dict[str, dict[str, float]]:
    counts = Counter((m["category"], m["action"]) for _d, m in rows if m["action"])
    return {c: {a: counts[c, a] / len(rows) for a in ("hold", "review")} for c in CATEGORIES}


def _drift(rows: list[Row], ref: Reference | None) -> dict[str, dict[str, float]] | None:
    if ref is None:
        return None
    scores = np.array([[m["scores"][c] for c in ref.scores] for _d, m in rows], dtype=float)
    features = np.array(
        [[d["features"][INDEX[f]] for f in ref.features] for d, _m in rows], dtype=float
    )  # None (missing) becomes NaN
    return {
        "scores": {
            c: psi(b.shares, b.counts(scores[:, j])) for j, (c, b) in enumerate(ref.scores.items())
        },
        "features": {
            f: psi(b.shares, b.counts(features[:, j]))
            for j, (f, b) in enumerate(ref.features.items())
        },
    }


def _outcomes(rows: list[Row], outcomes: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Per category: held parcels examined, how many confirmed it, the hit rate."""
    held: dict[str, str] = {}
    for d, m in rows:  # in topic order: a bill's last hold counts
        if m["action"] == "hold":
            held[d["hawb"]] = m["category"]
    out = {}
    for c in CATEGORIES:
        examined = [h for h, cat in held.items() if cat == c and h in outcomes]
        hits = sum(FINDINGS.get(outcomes[h]) == c for h in examined)
        rate = hits / len(examined) if examined else None
        out[c] = {"examined": len(examined), "hits": hits, "hit_rate": rate}
    return out


def _disagreements(decisions: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    pairs: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    totals: Counter[tuple[str, str]] = Counter()
    for d in decisions:
        sh = d.get("shadow")
        if not sh:
            continue
        pair = (d["model_version"], sh["model_version"])
        totals[pair] += 1
        serving = (d["action"], d["category"])
        shadow = (sh["action"], sh["category"])
        if serving != shadow:
            pairs[pair][f"{_say(serving)} -> {_say(shadow)}"] += 1
    return [
        {
            "serving": serving,
            "shadow": shadow,
            "decisions": n,
            "disagree": sum(pairs[serving, shadow].values()),
            "by": dict(pairs[serving, shadow].most_common()),
        }
        for (serving, shadow), n in totals.items()
    ]


def _say(action: tuple[str | None, str | None]) -> str:
    return f"{action[0]} {action[1]}" if action[0] else "none"


def summarise(
    decisions: Sequence[Mapping[str, Any]],
    dispositions: Iterable[Mapping[str, Any]],
    references: Mapping[str, Reference | None],
) -> dict[str, Any]:
    """The monitor's figures (JSON-ready); `references` by model version (None: the
    artifact has none, or is not in the model folder: no drift for it)."""
    outcomes = {r["hawb"]: r["outcome"] for r in dispositions}
    models = [
        {
            "version": version,
            "role": role,
            "decisions": len(rows),
            "actions": _actions(rows),
            "drift": _drift(rows, references.get(version)),
            "outcomes": _outcomes(rows, outcomes),
        }
        for (role, version), rows in _views(decisions).items()
    ]
    return {"models": models, "disagreements": _disagreements(decisions)}
