"""Stage 1: the manifest/entry join by HAWB.

A bill keeps the first-seen manifest and the first-seen entry. Each record that arrives
for a bill bumps its revision and yields the bill's current view, so a parcel is scored on
its first record and rescored, with both sides, when the other arrives. Bills remember
their partition so the expiry sweep can delete them in the right changelog partition.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from models.features import ParcelView
from streams.records import Record


def epoch(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


def join_record(
    bill: dict[str, Any] | None, kind: str, record: Record, partition: int
) -> tuple[dict[str, Any], ParcelView]:
    """Add a manifest or entry to its bill; returns the new bill and the view to score."""
    now = epoch(record["event_time"])
    b: dict[str, Any] = dict(bill) if bill else {"revision": 0, "first_seen": now}
    if b.get(kind) is None:
        b[kind] = record
    b["revision"] += 1
    b["last_seen"] = max(b.get("last_seen", now), now)
    b["p"] = partition
    return b, view_of(b, record["hawb"])


def view_of(bill: dict[str, Any], hawb: str) -> ParcelView:
    return ParcelView(hawb=hawb, manifest=bill.get("manifest"), entry=bill.get("entry"))


def expired(bill: dict[str, Any], now: float, ttl_s: float) -> bool:
    return now - bill.get("last_seen", bill.get("first_seen", now)) > ttl_s
