"""Stage 1: the manifest/entry join by HAWB.

A bill keeps the first-seen manifest and the first-seen entry. Each record that arrives
for a bill bumps its revision and yields the bill's current view, so a parcel is scored on
its first record and rescored, with both sides, when the other arrives. Bills remember
their partition so the expiry sweep can delete them in the right changelog partition, and
the revision each input record got, so a record replayed after a crash gets the same one,
and the revisions the next stage acknowledged, so such a replay is not sent twice. Those
are kept one by one, not as a high-water mark: after a crash the two records of a bill,
read from two topics, can be replayed in either order, and a later revision acknowledged
first says nothing of an earlier one whose parcel never went out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypedDict

from models.parcel import ParcelView
from models.records import Record, event_epoch

SEEN = 8  # input records per bill remembered for replays (a bill usually has two)


class Bill(TypedDict, total=False):
    """A bill as the bills table keeps it (JSON: tuples come back as lists)."""

    manifest: Record  # first seen
    entry: Record  # first seen
    revision: int  # records joined so far
    first_seen: float  # epoch seconds (event time)
    last_seen: float
    partition: int  # of its input records, so the expiry sweep deletes it there
    p: int  # the same, in bills stored before it had a name (partition_of reads either)
    touched: float  # stream time of its partition when last written: it expires by that
    seen: list[tuple[str, int]]  # (input record, its revision), the last SEEN of them
    # revisions the next stage has acknowledged, the last SEEN of them (an int, in bills
    # stored before: every revision up to it)
    forwarded: list[int] | int


def join_record(
    bill: Bill | None, kind: str, record: Record, partition: int, source: str, touched: float
) -> tuple[Bill, ParcelView, int]:
    """Add a manifest or entry to its bill; returns the new bill, the view to score and the
    record's revision. `source` names the input record (topic:partition:offset); a replay
    of one already joined changes nothing and keeps its revision. `touched` is the
    partition's stream time (models/stream_time.py): the bill expires that long after."""
    seen = dict(bill.get("seen", ())) if bill else {}
    if bill is not None and source in seen:
        return bill, view_of(bill, record["hawb"]), seen[source]
    now = event_epoch(record)
    b = bill.copy() if bill else Bill(revision=0, first_seen=now)
    if kind == "manifest" and b.get("manifest") is None:
        b["manifest"] = record
    elif kind == "entry" and b.get("entry") is None:
        b["entry"] = record
    b["revision"] += 1
    b["last_seen"] = max(b.get("last_seen", now), now)
    b["partition"] = partition
    b["touched"] = max(touched, b.get("touched", touched))
    seen[source] = b["revision"]
    b["seen"] = list(seen.items())[-SEEN:]
    return b, view_of(b, record["hawb"]), b["revision"]


def forwarded(bill: Bill | None, source: str) -> bool:
    """Was this input record joined and its parcel acknowledged by the next stage? Then a
    replay of it has nothing left to do."""
    if bill is None:
        return False
    revision = dict(bill.get("seen", ())).get(source)
    if revision is None:
        return False
    done = bill.get("forwarded", ())
    return revision <= done if isinstance(done, int) else revision in done


def mark_forwarded(bill: Bill, revisions: Iterable[int]) -> Bill:
    """Note, once the next stage has them, that these revisions of the bill's parcel went
    on."""
    done = bill.get("forwarded", ())
    known = set(range(1, done + 1)) if isinstance(done, int) else set(done)
    return {**bill, "forwarded": sorted(known.union(revisions))[-SEEN:]}


def view_of(bill: Bill, hawb: str) -> ParcelView:
    return ParcelView(hawb=hawb, manifest=bill.get("manifest"), entry=bill.get("entry"))


def expired(bill: Bill, now: float, ttl_s: float) -> bool:
    """Not written for `ttl_s` of its partition's stream time (bills from before stream
    time was kept per partition fall back to their newest event time)."""
    return now - bill.get("touched", bill.get("last_seen", now)) > ttl_s


def partition_of(bill: Bill) -> int:
    """The partition of the bill's input records (bills stored before the field had its
    name keep it as "p")."""
    return bill["partition"] if "partition" in bill else bill["p"]
