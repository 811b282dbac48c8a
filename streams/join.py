"""Stage 1: the manifest/entry join by HAWB.

A bill keeps the first-seen manifest and the first-seen entry. Each record that arrives
for a bill bumps its revision and yields the bill's current view, so a parcel is scored on
its first record and rescored, with both sides, when the other arrives. Bills remember
their partition so the expiry sweep can delete them in the right changelog partition, and
the revision each input record got, so a record replayed after a crash gets the same one,
and the newest revision the next stage acknowledged, so such a replay is not sent twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from models.features import ParcelView
from streams.records import Record

SEEN = 8  # input records per bill remembered for replays (a bill usually has two)


def epoch(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


def join_record(
    bill: dict[str, Any] | None,
    kind: str,
    record: Record,
    partition: int,
    source: str,
    touched: float,
) -> tuple[dict[str, Any], ParcelView, int]:
    """Add a manifest or entry to its bill; returns the new bill, the view to score and the
    record's revision. `source` names the input record (topic:partition:offset); a replay
    of one already joined changes nothing and keeps its revision. `touched` is the
    partition's stream time (models/stream_time.py): the bill expires that long after."""
    seen = dict(bill.get("seen", ())) if bill else {}
    if bill is not None and source in seen:
        return bill, view_of(bill, record["hawb"]), seen[source]
    now = epoch(record["event_time"])
    b: dict[str, Any] = dict(bill) if bill else {"revision": 0, "first_seen": now}
    if b.get(kind) is None:
        b[kind] = record
    b["revision"] += 1
    b["last_seen"] = max(b.get("last_seen", now), now)
    b["p"] = partition
    b["touched"] = max(touched, b.get("touched", touched))
    seen[source] = b["revision"]
    b["seen"] = list(seen.items())[-SEEN:]
    return b, view_of(b, record["hawb"]), b["revision"]


def forwarded(bill: dict[str, Any] | None, source: str) -> bool:
    """Was this input record joined and its parcel acknowledged by the next stage? Then a
    replay of it has nothing left to do."""
    if bill is None:
        return False
    revision = dict(bill.get("seen", ())).get(source)
    return revision is not None and revision <= bill.get("forwarded", 0)


def mark_forwarded(bill: dict[str, Any], revision: int) -> dict[str, Any]:
    """Note, once the next stage has it, that the bill's parcel up to `revision` went on."""
    return {**bill, "forwarded": max(revision, bill.get("forwarded", 0))}


def view_of(bill: dict[str, Any], hawb: str) -> ParcelView:
    return ParcelView(hawb=hawb, manifest=bill.get("manifest"), entry=bill.get("entry"))


def expired(bill: dict[str, Any], now: float, ttl_s: float) -> bool:
    """Not written for `ttl_s` of its partition's stream time (bills from before stream
    time was kept per partition fall back to their newest event time)."""
    return now - bill.get("touched", bill.get("last_seen", now)) > ttl_s
