"""Filers as reference data: every worker reads each filer's scorecard from targeting.filers.

One owner per filer code (the filer-history agent, keyed by the code) folds the filer's
events into its state and publishes its scorecard to the compacted topic; filers are few,
so each worker follows the whole topic into a `Board` (models/filers.py) and every parcel
is scored with its filer's record as published, whichever worker scores it, and the
compliance sample's rates come from the same weekly counts on every worker.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from models.filers import Board
from streams import metrics
from streams.security import reader
from streams.settings import Settings
from streams.topics import partitions

log = logging.getLogger(__name__)


async def follow_filers(s: Settings, board: Board, caught_up: asyncio.Event | None = None) -> None:
    """Read targeting.filers from its beginning into `board`, then follow it; `caught_up`
    is set once the board holds what the topic held when the reader started."""
    topic = s.topic("filers_topic")
    consumer = AIOKafkaConsumer(
        **reader(s), group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await partitions(s, topic)]
        if not tps:
            raise LookupError(f"{topic} does not exist (yet)")
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        metrics.board_read(len(board.cards), 0)
        while True:
            read = 0
            for msgs in (await consumer.getmany(timeout_ms=1000)).values():
                read += len(msgs)
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
            metrics.board_read(len(board.cards), read)
            waiting = caught_up is not None and not caught_up.is_set()
            if waiting and all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                log.info("board of filers caught up: %d filers", len(board.cards))
                caught_up.set()  # type: ignore[union-attr]  # waiting: not None
    finally:
        await consumer.stop()
