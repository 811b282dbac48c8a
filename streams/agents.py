"""Faust agents: thin loops that move batches between topics, tables and the pipeline.

join-bills (by HAWB) -> consignee-history (by address) -> score-parcels (by shipper).
Each stage reads a batch with `take_events`, calls the pure stage function with its table,
and sends what comes out; offsets of a batch are acknowledged when the next is requested,
so commits follow the sends (at-least-once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
import orjson
from faust.types import EventT

from streams import metrics
from streams.pipeline import (
    Ctx,
    Incoming,
    consignee_batch,
    dead_letters,
    join_batch,
    record_holds,
    score_batch,
    shipper_batch,
)
from streams.publishing import Outgoing, Source
from streams.records import CATEGORIES, RecordError
from streams.rules import HoldCap, RulesFile
from streams.serving import ModelServer, follow
from streams.settings import Settings
from streams.tables import Tables, define, in_event, sweep_bills
from streams.topics import category_holds_topic

log = logging.getLogger(__name__)


def _raw_topic(app: faust.App, *names: str, **kw: Any) -> faust.TopicT:
    return app.topic(
        *names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw", **kw
    )


def _source(ev: EventT) -> Source:
    m = ev.message
    return Source(m.topic, m.partition, m.offset, m.key, m.timestamp)


def per_event(events: Sequence[EventT]) -> Ctx:
    """Table context for the i-th record of a batch: its own event, so its own partition."""
    return lambda i: in_event(events[i])


def register(app: faust.App, s: Settings, server: ModelServer) -> Tables:
    kinds = {
        s.topic("manifest_topic"): "manifest",
        s.topic("entries_topic"): "entry",
        s.topic("dispositions_topic"): "disposition",
    }
    inputs = _raw_topic(app, *kinds, partitions=s.partitions)
    by_consignee = _raw_topic(
        app, f"{s.app_id}-by-consignee", internal=True, partitions=s.partitions
    )
    by_shipper = _raw_topic(app, f"{s.app_id}-by-shipper", internal=True, partitions=s.partitions)
    outputs = {
        "decisions": _raw_topic(app, s.topic("decisions_topic")),
        "holds": _raw_topic(app, s.topic("holds_topic")),
        "deadletter": _raw_topic(app, s.topic("deadletter_topic")),
    }
    for category in CATEGORIES:
        outputs[f"holds.{category}"] = _raw_topic(app, category_holds_topic(s, category))
    rules = RulesFile(Path(s.rules) if s.rules else None)
    cap = HoldCap(s.hold_cap_per_hour)
    tables = define(app, s)
    stream_time = [0.0]  # newest event time joined by this worker (epoch seconds)
    pkey = s.pseudonym_key.encode()

    async def send(messages: Sequence[Outgoing]) -> None:
        for o in messages:
            await outputs[o.output].send(key=o.key, value=o.value)

    async def forward(topic: faust.TopicT, items: Sequence[tuple[bytes, dict]]) -> None:
        for key, msg in items:
            await topic.send(key=key, value=orjson.dumps(msg))

    def decode_internal(events: Sequence[EventT]) -> tuple[list[EventT], list[dict]]:
        """Stage messages are ours, but a corrupt one still goes to the dead letters."""
        good_events, msgs, bad = [], [], []
        for ev in events:
            try:
                msgs.append(orjson.loads(ev.message.value))
                good_events.append(ev)
            except orjson.JSONDecodeError as exc:
                bad.append(
                    (
                        Incoming("internal", _source(ev), ev.message.value),
                        RecordError("record", f"corrupt stage message ({exc})"),
                    )
                )
        if bad:
            app.loop.create_task(send(dead_letters(bad)))
        return good_events, msgs

    @app.agent(inputs, name="join-bills")
    async def join_bills(stream: AsyncIterable[EventT]) -> None:
        async for events in stream.take_events(s.batch_size, within=s.batch_within_s):  # type: ignore[attr-defined]
            batch = []
            for ev in events:
                metrics.RECORDS.labels(ev.message.topic).inc()
                batch.append(Incoming(kinds[ev.message.topic], _source(ev), ev.message.value))
            res = join_batch(batch, tables.bills, s.max_record_bytes, ctx=per_event(events))
            stream_time[0] = max(stream_time[0], res.newest)
            await send(dead_letters(res.dead))
            for item, err in res.dead:
                metrics.DEAD_LETTERS.labels(item.source.topic, err.field.split(".")[0]).inc()
            await forward(by_consignee, res.forward)

    @app.agent(by_consignee, name="consignee-history")
    async def consignee_history(stream: AsyncIterable[EventT]) -> None:
        async for events in stream.take_events(s.batch_size, within=s.batch_within_s):  # type: ignore[attr-defined]
            evs, msgs = decode_internal(events)
            out = consignee_batch(msgs, tables.consignees, ctx=per_event(evs))
            await forward(by_shipper, out)

    @app.agent(by_shipper, name="score-parcels")
    async def score_parcels(stream: AsyncIterable[EventT]) -> None:
        async for events in stream.take_events(s.batch_size, within=s.batch_within_s):  # type: ignore[attr-defined]
            evs, msgs = decode_internal(events)
            parcels = shipper_batch(msgs, tables.shippers, ctx=per_event(evs))
            if not parcels:
                continue
            parcel_events = [ev for ev, m in zip(evs, msgs, strict=True) if m["t"] == "parcel"]
            started = time.perf_counter()
            scorer = server.scorer  # one model per batch, even if a promotion lands meanwhile
            reloaded = rules.refresh()
            if reloaded:
                metrics.RULE_RELOADS.labels(reloaded).inc()
                if rules.last_error:
                    log.error("rules not reloaded, the old ones stay: %s", rules.last_error)
            res = score_batch(parcels, scorer, pkey, rules.rules, cap)
            metrics.SCORING_SECONDS.observe(time.perf_counter() - started)
            metrics.BATCH_SIZE.observe(len(parcels))
            await send(res.out)
            record_holds(parcels, res.flagged, tables.shippers, ctx=per_event(parcel_events))
            metrics.DECISIONS.inc(len(parcels))
            for _i, category, action in res.flagged:
                metrics.HOLDS.labels(category, action).inc()
            for rule in res.rule_hits:
                metrics.RULE_MATCHES.labels(rule).inc()
            now = datetime.now(UTC)
            for t in res.event_times:
                metrics.LATENCY_SECONDS.observe(
                    max(0.0, (now - datetime.fromisoformat(t)).total_seconds())
                )

    @app.task
    async def follow_promotions() -> None:
        while True:  # a broker hiccup must not end promotions for the worker's lifetime
            try:
                await follow(s, server)
            except Exception:
                log.exception("models.control reader failed; retrying")
                await asyncio.sleep(2.0)

    @app.timer(interval=s.bill_sweep_s)
    async def expire_bills() -> None:
        if not stream_time[0]:
            return
        try:  # housekeeping must never take the worker down
            sweep_bills(tables.bills, s.bill_ttl_s, stream_time[0], s.topic("manifest_topic"))
        except Exception:
            log.exception("bill expiry sweep failed; will retry at the next interval")

    return tables
