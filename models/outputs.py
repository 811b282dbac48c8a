"""The records the product publishes: decisions, holds and dead letters.

Built here as plain records; which topic each goes to and how it is encoded for Kafka is
streams/publishing.py's business. Decisions go to data scientists and auditors, so they are
pseudonymised: shipper and consignee become keyed hashes (HMAC-SHA256 with a key from
configuration) of the same normalised keys their histories use, stable across runs so
decisions, history and exports still join. Holds go to analysts and carry identities and
reasons.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NotRequired, TypedDict, cast

import numpy as np

from models import parcel
from models.features import INDEX
from models.parcel import ParcelView
from models.records import CATEGORIES, Record, RecordError
from models.scoring import Scored


class SourceRef(TypedDict):
    """Where an input record is in Kafka, as output records carry it."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Source:
    """Where an input record came from: enough to find it again, and its key."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None

    def as_dict(self) -> SourceRef:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}

    @staticmethod
    def ident(d: SourceRef) -> str:
        """One string per input record (from `as_dict`), to recognise its replays."""
        return f"{d['topic']}:{d['partition']}:{d['offset']}"


class Party(TypedDict, total=False):
    """A shipper or consignee as a hold shows it to analysts."""

    name: str
    city: str
    country: str
    history: dict[str, float]


class ShadowDecision(TypedDict):
    """A shadow model's view of a decision (models/shadow.py): never acted on."""

    model_version: str
    scores: dict[str, float]
    action: str | None
    category: str | None


class Decision(TypedDict):
    schema_version: int
    hawb: str
    revision: int
    source: SourceRef
    has_manifest: bool
    has_entry: bool
    entry_type: str | None
    shipper_id: str
    consignee_id: str
    origin: str
    declared_value_usd: float | None
    scores: dict[str, float]
    action: str | None
    category: str | None
    rules: list[str]
    sample_rate: float | None  # the compliance sample's rate when selected (its weight: 1/rate)
    trusted: str | None  # the trusted party whose raised hold threshold applied
    model_version: str
    features: list[float | None]
    event_time: str
    scored_at: str
    shadow: NotRequired[ShadowDecision]  # only while a shadow model is scored


class Hold(TypedDict):
    schema_version: int
    hawb: str
    revision: int
    source: SourceRef
    entry_number: str | None
    scores: dict[str, float]
    category: str
    action: str
    reasons: list[str]
    rules: list[str]
    shipper: Party
    consignee: Party
    model_version: str
    event_time: str
    scored_at: str


class DeadLetter(TypedDict, total=False):
    source: SourceRef
    field: str
    reason: str
    error: str
    original_b64: str
    dead_lettered_at: str
    original_truncated: dict[str, Any]  # only when the original was cut


def pseudonym(key: bytes, text: str) -> str:
    return hmac.digest(key, text.encode(), "sha256").hex()[:20]  # one-shot: no HMAC object


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# a dead letter keeps at most this much of its original (base64 makes it a third larger),
# so a multi-megabyte record cannot make its dead letter too large to produce
DEAD_LETTER_KEEP_BYTES = 256 * 1024


def dead_letter(source: Source, raw: bytes | None, err: RecordError) -> DeadLetter:
    """The original bytes (base64, so any bytes survive), where they came from, and why.

    Beyond DEAD_LETTER_KEEP_BYTES only the head is kept, with the full size and sha256; the
    whole record stays at its source (topic, partition, offset).
    """
    raw = raw or b""
    letter = DeadLetter(
        source=source.as_dict(),
        field=err.field,
        reason=err.reason,
        error=str(err),
        original_b64=base64.b64encode(raw[:DEAD_LETTER_KEEP_BYTES]).decode(),
        dead_lettered_at=now_iso(),
    )
    if len(raw) > DEAD_LETTER_KEEP_BYTES:
        letter["original_truncated"] = {
            "bytes": len(raw),
            "sha256": hashlib.sha256(raw).hexdigest(),
        }
    return letter


def _party(party: Record, history: Mapping[str, float] | None) -> Party:
    out = Party(name=party["name"], city=party["city"], country=party["country"])
    if history:
        out["history"] = {
            k: (round(v, 3) if isinstance(v, float) else v) for k, v in history.items()
        }
    return out


def _feature_lists(X: np.ndarray) -> list[list[float | None]]:
    """Feature rows for JSON: NaN (missing) as null, 6 decimals. numpy's round (scale by
    10**6, round half to even, divide) is Python's correctly rounded round() here, bit for
    bit, because the features are float32: x * 10**6 needs at most 24 + 14 bits, exact in
    float64."""
    if X.dtype != np.float32:
        raise TypeError(
            f"features must be float32 (numpy's round is exact for them), not {X.dtype}"
        )
    X64 = np.round(X.astype(np.float64), 6)
    rows = X64.astype(object)
    rows[np.isnan(X64)] = None
    return cast(list[list[float | None]], rows.tolist())


def decisions_and_holds(
    views: Sequence[ParcelView],
    sources: Sequence[SourceRef],
    revisions: Sequence[int],
    scored: Scored,
    reasons: Mapping[int, list[str]],
    model_version: str,
    pseudonym_key: bytes,
    rules: Sequence[list[str]] | None = None,
    keys: Sequence[tuple[str, str]] | None = None,
    sampled: Sequence[float | None] | None = None,
    trusted: Sequence[str | None] | None = None,
) -> tuple[list[Decision], list[Hold]]:
    """One decision per view; a hold for each flagged one. `keys`: each parcel's shipper
    and consignee keys when the caller has them, else made from the views. A pseudonym is
    made once per batch: a shipper's parcels come in batches together."""
    scored_at = now_iso()
    ids: dict[str, str] = {}

    def pseudonym_of(key: str) -> str:
        if key not in ids:
            ids[key] = pseudonym(pseudonym_key, key)
        return ids[key]

    decisions: list[Decision] = []
    holds: list[Hold] = []
    features = _feature_lists(scored.features)
    all_scores = scored.scores.tolist()
    value_at = INDEX["declared_value_usd"]
    for i, view in enumerate(views):
        shipper, consignee = parcel.parties(view)
        shipper_key, consignee_key = keys[i] if keys else parcel.keys(view)
        scores = dict(zip(CATEGORIES, all_scores[i], strict=True))  # exact: thresholds compare
        entry = view.get("entry")
        event_time = parcel.event_time(view)
        action, category = scored.actions[i], scored.categories[i]
        decision: Decision = {
            "schema_version": 1,
            "hawb": view["hawb"],
            "revision": revisions[i],
            "source": sources[i],
            "has_manifest": view.get("manifest") is not None,
            "has_entry": entry is not None,
            "entry_type": entry["entry_type"] if entry else None,
            "shipper_id": pseudonym_of(shipper_key),
            "consignee_id": pseudonym_of(consignee_key),
            "origin": shipper["country"],
            "declared_value_usd": features[i][value_at],
            "scores": scores,
            "action": action,
            "category": category,
            "rules": rules[i] if rules else [],
            "sample_rate": sampled[i] if sampled else None,
            "trusted": trusted[i] if trusted else None,
            "model_version": model_version,
            "features": features[i],
            "event_time": event_time,
            "scored_at": scored_at,
        }
        decisions.append(decision)
        if action is not None and category is not None:
            hold: Hold = {
                "schema_version": 1,
                "hawb": view["hawb"],
                "revision": revisions[i],
                "source": sources[i],
                "entry_number": entry["entry_number"] if entry else None,
                "scores": scores,
                "category": category,
                "action": action,
                "reasons": reasons.get(i, []),
                "rules": rules[i] if rules else [],
                "shipper": _party(shipper, view.get("shipper_history")),
                "consignee": _party(consignee, view.get("consignee_history")),
                "model_version": model_version,
                "event_time": event_time,
                "scored_at": scored_at,
            }
            holds.append(hold)
    return decisions, holds
