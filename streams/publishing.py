"""Output records: decisions, holds and dead letters, built from a scored batch.

Pure functions (no Kafka): the agent sends what these return. Decisions go to data
scientists and auditors, so they are pseudonymised: names and addresses become keyed
hashes (HMAC-SHA256 with a key from configuration), stable across runs so history and
exports still join. Holds go to analysts and carry identities and reasons.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from models.features import INDEX, ParcelView, normalise_name
from models.records import CATEGORIES, RecordError, encode
from models.scoring import Scored


@dataclass(frozen=True)
class Source:
    """Where an input record came from: enough to find it again in Kafka."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    timestamp_ms: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}

    @staticmethod
    def ident(d: dict[str, Any]) -> str:
        """One string per input record (from `as_dict`), to recognise its replays."""
        return f"{d['topic']}:{d['partition']}:{d['offset']}"


@dataclass(frozen=True)
class Outgoing:
    """One message to produce: which output ('decisions', 'holds', 'deadletter'), key, value."""

    output: str
    key: bytes
    value: bytes


def pseudonym(key: bytes, text: str) -> str:
    return hmac.new(key, normalise_name(text).encode(), hashlib.sha256).hexdigest()[:20]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# a dead letter keeps at most this much of its original (base64 makes it a third larger),
# so a multi-megabyte record cannot make its dead letter too large to produce
DEAD_LETTER_KEEP_BYTES = 256 * 1024


def dead_letter(src: Source, raw: bytes | None, err: RecordError) -> Outgoing:
    """The original bytes (base64, so any bytes survive), where they came from, and why.

    Beyond DEAD_LETTER_KEEP_BYTES only the head is kept, with the full size and sha256; the
    whole record stays at its source (topic, partition, offset).
    """
    raw = raw or b""
    value: dict[str, Any] = {
        "source": src.as_dict(),
        "field": err.field,
        "reason": err.reason,
        "error": str(err),
        "original_b64": base64.b64encode(raw[:DEAD_LETTER_KEEP_BYTES]).decode(),
        "dead_lettered_at": now_iso(),
    }
    if len(raw) > DEAD_LETTER_KEEP_BYTES:
        value["original_truncated"] = {
            "bytes": len(raw),
            "sha256": hashlib.sha256(raw).hexdigest(),
        }
    return Outgoing("deadletter", src.key or b"", encode(value))


def _party(view: ParcelView) -> Mapping[str, Any]:
    rec = view.get("entry") or view.get("manifest")
    assert rec is not None
    return rec


def _summary(party: Mapping[str, Any], history: Mapping[str, float] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": party["name"],
        "city": party["city"],
        "country": party["country"],
    }
    if history:
        out["history"] = {
            k: (round(v, 3) if isinstance(v, float) else v) for k, v in history.items()
        }
    return out


def _nums(row: list[float]) -> list[float | None]:
    """Feature values for JSON: NaN (missing) as null, 6 decimals (from `tolist`: a C loop)."""
    return [None if x != x else round(x, 6) for x in row]


def _scores(row: list[float]) -> dict[str, float]:
    return dict(zip(CATEGORIES, row, strict=True))  # exact: thresholds compare


def decisions_and_holds(
    views: Sequence[ParcelView],
    sources: Sequence[Source],
    revisions: Sequence[int],
    scored: Scored,
    reasons: Mapping[int, list[str]],
    model_version: str,
    pseudonym_key: bytes,
    rules: Sequence[list[str]] | None = None,
) -> list[Outgoing]:
    """One decision per view; a hold for each flagged one, also on its category's topic."""
    scored_at = now_iso()
    out: list[Outgoing] = []
    features = [_nums(row) for row in scored.features.tolist()]
    all_scores = scored.scores.tolist()
    value_at = INDEX["declared_value_usd"]
    for i, view in enumerate(views):
        rec = _party(view)
        hawb = view["hawb"]
        key = hawb.encode()
        scores = _scores(all_scores[i])
        entry = view.get("entry")
        event_time = rec["event_time"]
        decision = {
            "schema_version": 1,
            "hawb": hawb,
            "revision": revisions[i],
            "source": sources[i].as_dict(),
            "has_manifest": view.get("manifest") is not None,
            "has_entry": entry is not None,
            "entry_type": entry["entry_type"] if entry else None,
            "shipper_id": pseudonym(
                pseudonym_key, rec["shipper"]["name"] + "|" + rec["shipper"]["country"]
            ),
            "consignee_id": pseudonym(
                pseudonym_key, rec["consignee"]["address"] + "|" + rec["consignee"].get("zip", "")
            ),
            "origin": rec["shipper"]["country"],
            "declared_value_usd": features[i][value_at],
            "scores": scores,
            "action": scored.actions[i],
            "category": scored.categories[i],
            "rules": rules[i] if rules else [],
            "model_version": model_version,
            "features": features[i],
            "event_time": event_time,
            "scored_at": scored_at,
        }
        out.append(Outgoing("decisions", key, encode(decision)))
        if scored.actions[i] is not None:
            hold = {
                "schema_version": 1,
                "hawb": hawb,
                "revision": revisions[i],
                "source": sources[i].as_dict(),
                "entry_number": entry["entry_number"] if entry else None,
                "scores": scores,
                "category": scored.categories[i],
                "action": scored.actions[i],
                "reasons": reasons.get(i, []),
                "rules": rules[i] if rules else [],
                "shipper": _summary(rec["shipper"], view.get("shipper_history")),
                "consignee": _summary(rec["consignee"], view.get("consignee_history")),
                "model_version": model_version,
                "event_time": event_time,
                "scored_at": scored_at,
            }
            value = encode(hold)
            out.append(Outgoing("holds", key, value))
            out.append(Outgoing(f"holds.{scored.categories[i]}", key, value))
    return out
