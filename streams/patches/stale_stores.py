"""A local table store ahead of its changelog is rebuilt from the changelog.

The worker's tables live in local RocksDB stores (the data dir) backed by changelog topics.
When the broker's state is wiped or replaced while the data dir survives, a store's
persisted changelog offset is beyond the end of its changelog, and faust-streaming 0.15
stops recovery with ConsistencyError ("The persisted offset ... is higher than the last
offset in that topic") at every start, so the worker cannot run until someone finds and
deletes the right folder.

Kafka Streams meets the same state (a checkpoint beyond the changelog's end: the task is
corrupted) by wiping the task's local stores and restoring them from the changelog. Here
the same happens per changelog partition: before recovery seeks, Recovery._build_offsets
(which turns the stores' persisted offsets into where reading starts) compares each
partition's persisted offset with the changelog's highwater; a store that is ahead is
emptied (its keys and its persisted offset) with a WARNING that names the table, the
partition, the store's folder and both offsets, and is read from the changelog's start.
Streams are paused during recovery, so nothing reads the store while it is emptied.

A store that cannot be emptied in place (not RocksDB) gives a one-line error that names the
folder to remove. Part of the worker's Recovery (streams/patches/tables.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from faust.tables.recovery import Recovery as FaustRecovery
from faust.types import TP

from streams.patches import written_for

log = logging.getLogger(__name__)


class StaleStoreError(RuntimeError):
    """A local store is ahead of its changelog and cannot be emptied here."""


class RebuildStaleStores(FaustRecovery):
    async def _build_offsets(
        self, consumer: Any, tps: set[TP], destination: Any, title: str
    ) -> None:
        if tps:
            ends = await consumer.highwaters(*tps)  # the next offset to be written
            for tp in tps:
                persisted, end = destination.get(tp), ends.get(tp)
                if persisted is None or end is None:  # no store offset, or no end known
                    continue
                last = end - 1  # Faust's offsets are those of the last message read
                if persisted > last:
                    discard(self.tp_to_table[tp], tp, persisted, last)
                    destination[tp] = None  # read from the changelog's earliest offset
        await super()._build_offsets(consumer, tps, destination, title)


def store_path(table: Any, tp: TP) -> Path | None:
    partition_path = getattr(table.data, "partition_path", None)
    return Path(partition_path(tp.partition)) if partition_path else None


def discard(table: Any, tp: TP, persisted: int, last: int) -> int:
    """Empty the local store of one changelog partition; returns the keys removed."""
    store = table.data
    path = store_path(table, tp)
    db_for = getattr(store, "_db_for_partition", None)
    if db_for is None:
        where = path or table.app.conf.tabledir
        raise StaleStoreError(
            f"table {table.name}: the local store of {tp.topic}[{tp.partition}] is ahead of "
            f"its changelog (offset {persisted} > {last}): the broker's state was wiped or "
            f"replaced; remove {where} and start again"
        )
    db = db_for(tp.partition)
    keys = list(db.keys())
    for key in keys:
        db.delete(key)
    store._key_index.clear()  # key -> partition cache: keys of this partition are gone
    log.warning(
        "table %s: local store %s is ahead of its changelog %s[%d] (persisted offset %d, "
        "the changelog's last %s): the broker's state was wiped or replaced since it was "
        "written; discarded its %d keys, rebuilding it from the changelog",
        table.name,
        path,
        tp.topic,
        tp.partition,
        persisted,
        f"offset {last}" if last >= 0 else "offset -1: empty",
        len(keys),
    )
    return len(keys)


written_for("faust-streaming", "0.15.3")
