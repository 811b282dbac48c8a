"""Shadow scoring: a candidate model scored beside the serving one, on the same parcels.

Each decision carries the candidate's scores and what it would have done (`shadow` on the
decision record); holds, and everything else, stay the serving model's. The candidate costs
its own model call: it reuses the serving model's feature matrix when both were trained
against the same reference medians (a model retrained on exported decisions keeps them),
and builds its own features only when they differ. The same rules apply to both; the hold
cap only to the serving model, whose holds are real.
"""

from __future__ import annotations

from collections.abc import Sequence

from models.features import build_features
from models.outputs import ShadowDecision
from models.parcel import ParcelView
from models.records import CATEGORIES
from models.rules import Match, merge
from models.scoring import Scored, Scorer, decide


def score_shadow(
    candidate: Scorer,
    serving: Scorer,
    views: Sequence[ParcelView],
    served: Scored,
    matches: list[list[Match]],
) -> Scored:
    """The candidate's scores and would-be actions for a batch the serving model scored."""
    refs = candidate.artifact.references
    same = refs == serving.artifact.references
    X = served.features if same else build_features(views, refs)
    scores = candidate.artifact.model.predict_proba(X)
    actions, categories = merge(*decide(scores, candidate.thresholds), matches)
    return Scored(X, scores, actions, categories)


def shadow_decisions(version: str, shadowed: Scored) -> list[ShadowDecision]:
    """What goes on each decision of the batch, in order."""
    return [
        {
            "model_version": version,
            "scores": dict(zip(CATEGORIES, row, strict=True)),
            "action": shadowed.actions[i],
            "category": shadowed.categories[i],
        }
        for i, row in enumerate(shadowed.scores.tolist())
    ]
