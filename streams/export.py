"""Export: scored decisions joined with analyst dispositions, as a labelled data set.

Closes the feedback loop: `parcel-risk export` -> `train` -> `evaluate` -> `promote`.
This module reads both topics to their end; the rows themselves are
models.dataset.labelled_rows.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from models.dataset import labelled_rows, write_jsonl
from models.filers import Scorecard, scorecards
from models.rules import RulesFile
from streams.security import reader
from streams.settings import Settings
from streams.topics import partitions


async def read_topic(
    s: Settings, topic: str, since_ms: int | None = None, idle_s: float = 2.0
) -> list[dict[str, Any]]:
    """All JSON values on a topic (from `since_ms`), up to its current end."""
    consumer = AIOKafkaConsumer(**reader(s), group_id=None, enable_auto_commit=False)
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        tps = [TopicPartition(topic, p) for p in await partitions(s, topic)]
        if not tps:
            return out
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        if since_ms is not None:
            for tp, ot in (await consumer.offsets_for_times({tp: since_ms for tp in tps})).items():
                if ot is None:
                    consumer.seek(tp, ends[tp])
                else:
                    consumer.seek(tp, ot.offset)
        else:  # explicit: seek_to_beginning after end_offsets can land on the end
            for tp, offset in (await consumer.beginning_offsets(tps)).items():
                consumer.seek(tp, offset)
        last = time.monotonic()
        while await _behind(consumer, tps, ends):
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for msgs in batch.values():
                for m in msgs:
                    try:
                        out.append(orjson.loads(m.value))
                    except orjson.JSONDecodeError:
                        continue
                last = time.monotonic()
            if not batch and time.monotonic() - last > idle_s:
                break
    finally:
        await consumer.stop()
    return out


async def _behind(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], ends: dict[TopicPartition, int]
) -> bool:
    for tp in tps:
        if await consumer.position(tp) < ends[tp]:
            return True
    return False


async def export(s: Settings, out: Path, since: str | None = None) -> int:
    since_ms = int(datetime.fromisoformat(since).timestamp() * 1000) if since else None
    decisions = await read_topic(s, s.topic("decisions_topic"), since_ms)
    dispositions = await read_topic(s, s.topic("dispositions_topic"))
    return write_jsonl(labelled_rows(decisions, dispositions), out)


async def filer_cards(s: Settings, since: str | None = None) -> dict[str, Scorecard]:
    """Filers' scorecards from the topics (entries, decisions, dead letters, dispositions),
    with the status thresholds of the rules file in force."""
    since_ms = int(datetime.fromisoformat(since).timestamp() * 1000) if since else None
    rules = RulesFile(Path(s.rules) if s.rules else None).rules
    return scorecards(
        await read_topic(s, s.topic("entries_topic"), since_ms),
        await read_topic(s, s.topic("decisions_topic"), since_ms),
        await read_topic(s, s.topic("deadletter_topic"), since_ms),
        await read_topic(s, s.topic("dispositions_topic")),
        rules.filers,
        s.topic("entries_topic"),
    )
