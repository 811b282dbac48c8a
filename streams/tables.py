"""The worker's state: Faust tables for bills, consignees and shippers.

Each table is changelog-backed (state survives restarts and moves with its partitions) and
co-partitioned with the stream that updates it. Faust finds a key's partition from the
*current event*, which `stream.take_events` does not set per record (faust-streaming issue
#497), so `in_event` sets it for each record of a batch: every read and write then goes to
that record's own partition, store and changelog.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import faust
from faust.streams import _current_event

from streams.join import expired
from streams.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tables:
    bills: faust.Table  # HAWB -> first-seen manifest and entry, revision, partition
    consignees: faust.Table  # normalised address -> consignee history
    shippers: faust.Table  # normalised shipper key -> shipper history


def define(app: faust.App, s: Settings) -> Tables:
    schema = faust.Schema(key_type=str, key_serializer="raw", value_serializer="json")

    def table(name: str, help_: str) -> faust.Table:
        return app.Table(name, default=None, partitions=s.partitions, schema=schema, help=help_)

    return Tables(
        bills=table("bills", "first-seen manifest and entry per HAWB"),
        consignees=table("consignees", "history per delivery address"),
        shippers=table("shippers", "history per normalised shipper"),
    )


@contextmanager
def in_event(event: Any) -> Iterator[None]:
    """Make `event` the current event, so table access uses its partition."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class PartitionEvent:
    """A stand-in event for table work outside a stream (the expiry sweep).

    Faust reads the partition and checks it against the table's source topic.
    """

    def __init__(self, partition: int, topic: str) -> None:
        self.message = SimpleNamespace(partition=partition, topic=topic)


def sweep_bills(bills: faust.Table, ttl_s: float, now: float, source_topic: str) -> int:
    """Forget bills not seen for `ttl_s`, each in its own partition; returns how many.

    `now` is stream time (the newest event time seen), not the wall clock: a backfill of
    last year's traffic must not expire the bills it is joining.
    """
    stale = [(k, v["p"]) for k, v in list(bills.items()) if v and expired(v, now, ttl_s)]
    for key, partition in stale:
        ev = PartitionEvent(partition, source_topic)
        with in_event(ev):
            del bills[key]
    if stale:
        log.info("expired %d bills older than %.0f days", len(stale), ttl_s / 86400)
    return len(stale)
