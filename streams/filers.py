"""Filers as reference data: every worker reads each filer's scorecard from targeting.filers.

One owner per filer code (the filer-history agent, keyed by the code) folds the filer's
events into its state and publishes its scorecard to the compacted topic; filers are few,
so each worker follows the whole topic into a `Board` (models/filers.py) and every parcel
is scored with its filer's record as published, whichever worker scores it.
"""

from __future__ import annotations

import logging

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from models.filers import Board
from streams.security import connection
from streams.settings import Settings
from streams.topics import partitions

log = logging.getLogger(__name__)


async def follow_filers(s: Settings, board: Board) -> None:
    """Read targeting.filers from its beginning into `board`, then follow it."""
    topic = s.topic("filers_topic")
    consumer = AIOKafkaConsumer(
        **connection(s), group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await partitions(s, topic)]
        if not tps:
            raise LookupError(f"{topic} does not exist (yet)")
        consumer.assign(tps)
        while True:
            for msgs in (await consumer.getmany(timeout_ms=1000)).values():
                for m in msgs:
                    if m.key is None or not m.value:
                        continue
                    try:
                        card = orjson.loads(m.value)
                        if not isinstance(card, dict):
                            raise ValueError("not an object")
                        board.update(m.key.decode(), card)
                    except (ValueError, TypeError):  # JSON and UTF-8 errors are ValueErrors
                        log.error("ignoring malformed filer scorecard at offset %d", m.offset)
    finally:
        await consumer.stop()
