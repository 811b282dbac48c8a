"""Export: scored decisions joined with analyst dispositions, as a labelled data set.

Closes the feedback loop: `parcel-risk export` -> `train` -> `evaluate` -> `promote`.
A row carries the feature vector exactly as the worker served it (so retraining has no
skew) and labels from the dispositions: a seizure marks its category, a release or no
exam at all counts as clean. That is the usual selection bias of customs data (only what
was examined can be positive); the evaluation report states the base rate it saw.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from models.records import CATEGORIES, FINDINGS
from streams.security import connection
from streams.settings import Settings
from streams.topics import partitions


async def read_topic(
    s: Settings, topic: str, since_ms: int | None = None, idle_s: float = 2.0
) -> list[dict[str, Any]]:
    """All JSON values on a topic (from `since_ms`), up to its current end."""
    consumer = AIOKafkaConsumer(**connection(s), group_id=None, enable_auto_commit=False)
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


def labelled_rows(
    decisions: list[dict[str, Any]], dispositions: list[dict[str, Any]]
) -> Iterator[dict[str, Any]]:
    """One row per decision, labelled from the bill's dispositions; latest revision final."""
    outcomes: dict[str, set[str]] = {}
    for d in dispositions:
        if "hawb" in d and d.get("outcome") in FINDINGS:
            outcomes.setdefault(d["hawb"], set()).add(FINDINGS[d["outcome"]])
    examined = {d["hawb"] for d in dispositions if "hawb" in d}
    final: dict[str, int] = {}
    for d in decisions:
        final[d["hawb"]] = max(final.get(d["hawb"], 0), d.get("revision", 1))
    for d in decisions:
        hawb = d["hawb"]
        positive = outcomes.get(hawb, set())
        yield {
            "hawb": hawb,
            "event_time": d["event_time"],
            "revision": d.get("revision", 1),
            "final": d.get("revision", 1) == final[hawb],
            "features": d["features"],
            "model_version": d["model_version"],
            "examined": hawb in examined,
            "labels": {c: int(c in positive) for c in CATEGORIES},
            "value_usd": d.get("declared_value_usd") or 0.0,
        }


async def export(s: Settings, out: Path, since: str | None = None) -> int:
    since_ms = int(datetime.fromisoformat(since).timestamp() * 1000) if since else None
    decisions = await read_topic(s, s.topic("decisions_topic"), since_ms)
    dispositions = await read_topic(s, s.topic("dispositions_topic"))
    n = 0
    with out.open("wb") as f:
        for row in labelled_rows(decisions, dispositions):
            f.write(orjson.dumps(row) + b"\n")
            n += 1
    return n
