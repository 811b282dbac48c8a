"""Faust agents: thin loops that move batches between topics, tables and the pipeline.

join-bills (by HAWB) -> consignee-history (by address) -> score-parcels (by shipper);
join-bills (invalid entries, exam outcomes) and score-parcels (entries decided) also send
filer events to filer-history (by filer code), the one owner of each filer's state, which
publishes its scorecard to targeting.filers; every worker follows that topic into its
board of filers (streams/filers.py), which score-parcels reads.

Each stage reads a batch with `take_events`, calls the pure stage function with its table,
puts what comes out in an outbox and ends the batch with `settle`: in the order
at-least-once rests on, or in one transaction of the stage (streams/outbox.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, cast

import faust
from faust.types import EventT

from models.filers import Board, FilerMessage, counted, decided
from models.outputs import Source
from models.pipeline import (
    Ctx,
    Exam,
    Failures,
    Incoming,
    StageMessage,
    attach_filers,
    consignee_batch,
    filer_batch,
    join_batch,
    record_decisions,
    record_forwarded,
    score_batch,
    shipper_batch,
    undecided,
)
from models.records import CATEGORIES, RecordError
from models.rules import HoldCap, RulesFile
from models.sampling import Sampler
from models.stream_time import StreamTime
from streams import backpressure, envelopes, metrics
from streams.filers import follow_filers
from streams.monitoring import DriftWatch
from streams.outbox import Outbox, settle
from streams.publishing import filer_cards, scored
from streams.serving import ModelServer, follow
from streams.settings import Settings
from streams.tables import Tables, define, in_event, sweep_bills
from streams.topics import category_holds_topic, stage_topic

log = logging.getLogger(__name__)
BOARD_WAIT_S = 30.0  # longest wait for the board of filers before scoring anyway
# the stages, as Faust's agents are named (also in exactly-once transactional ids)
JOIN, CONSIGNEES = "join-bills", "consignee-history"
SCORE, FILERS = "score-parcels", "filer-history"


def _raw_topic(app: faust.App, *names: str, **kw: Any) -> faust.TopicT:
    return app.topic(
        *names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw", **kw
    )


def _source(ev: EventT) -> Source:
    m = ev.message
    return Source(m.topic, m.partition, m.offset, m.key)


def per_event(events: Sequence[EventT]) -> Ctx:
    """Table context for the i-th record of a batch: its own event, so its own partition."""
    return lambda i: in_event(events[i])


def register(app: faust.App, s: Settings, server: ModelServer, drift: DriftWatch) -> Tables:
    kinds = {
        s.topic("manifest_topic"): "manifest",
        s.topic("entries_topic"): "entry",
        s.topic("dispositions_topic"): "disposition",
    }
    inputs = _raw_topic(app, *kinds, partitions=s.partitions)
    by_consignee = _raw_topic(
        app, stage_topic(s, "by-consignee"), internal=True, partitions=s.partitions
    )
    by_shipper = _raw_topic(
        app, stage_topic(s, "by-shipper"), internal=True, partitions=s.partitions
    )
    by_filer = _raw_topic(app, stage_topic(s, "by-filer"), internal=True, partitions=s.partitions)
    outputs = {
        "filers": _raw_topic(app, s.topic("filers_topic")),
        "decisions": _raw_topic(app, s.topic("decisions_topic")),
        "holds": _raw_topic(app, s.topic("holds_topic")),
        "deadletter": _raw_topic(app, s.topic("deadletter_topic")),
    }
    for category in CATEGORIES:
        outputs[f"holds.{category}"] = _raw_topic(app, category_holds_topic(s, category))
    rules = RulesFile(Path(s.rules) if s.rules else None)
    cap = HoldCap(s.hold_cap_per_hour)
    tables = define(app, s)
    stream_time = StreamTime()  # per partition of the input topics: bills expire by it
    pkey = s.pseudonym_key.encode()
    board = Board()  # every filer's scorecard as published on targeting.filers
    board_read = asyncio.Event()  # the board holds what the topic held at start
    # stratified by filer from the previous week's entries of all filers on the board: the
    # same on every worker that has read the same scorecards (flat share while it has none)
    sampler = Sampler(pkey, board.entries_in, board.version)

    # stage batches count envelopes: about batch_size records
    envelope_batch = max(4, s.batch_size // (envelopes.MAX_RECORDS // 2))
    record_batch = s.batch_size
    if s.stage_backlog:  # later stages first (a backlog of input crowds them out)
        backpressure.register(
            app,
            kinds,
            [by_consignee.get_topic_name(), by_shipper.get_topic_name()],
            high=s.stage_backlog,
            low=s.stage_backlog // 2,
        )

    async def run(
        stage: str, compute: Callable[[Sequence[EventT]], Outbox], events: Sequence[EventT]
    ) -> None:
        """One batch of a stage: its outbox computed, then settled; both steps timed, so
        where a record's time goes in each stage is on /metrics."""
        started = time.perf_counter()
        box = compute(events)
        computed = time.perf_counter()
        await settle(box)
        metrics.STAGE_SECONDS.labels(stage, "compute").observe(computed - started)
        metrics.STAGE_SECONDS.labels(stage, "settle").observe(time.perf_counter() - computed)

    def outbox(stage: str, events: Sequence[EventT]) -> Outbox:
        return Outbox(app, outputs, s.partitions, stage, events)

    def unpack(events: Sequence[EventT], box: Outbox) -> tuple[list[EventT], list[StageMessage]]:
        """Records of stage envelopes, each with its envelope's event (so its partition).

        Stage messages are ours, but a corrupt one still goes to the dead letters.
        """
        record_events: list[EventT] = []
        records: list[StageMessage] = []
        bad = []
        for ev in events:
            try:
                batch = envelopes.unpack(ev.message.value)
            except envelopes.EnvelopeError as exc:
                bad.append(
                    (
                        Incoming("internal", _source(ev), ev.message.value),
                        RecordError("record", str(exc)),
                    )
                )
                continue
            records.extend(cast(list[StageMessage], batch))  # our own stages wrote them
            record_events.extend([ev] * len(batch))
        box.dead(bad)
        return record_events, records

    async def expire_bills() -> None:
        """The bills' expiry sweep, run by the join stage between its batches (a timer's
        deletes would be flushed with a batch's writes before its outputs are out)."""
        try:  # housekeeping must never take the worker down
            sweep_bills(tables.bills, s.bill_ttl_s, stream_time, s.topic("manifest_topic"))
            await settle(outbox(JOIN, ()).end(tables.bills))
        except Exception:
            log.exception("bill expiry sweep failed; will retry at the next interval")

    def join(events: Sequence[EventT]) -> Outbox:
        batch = [Incoming(kinds[ev.message.topic], _source(ev), ev.message.value) for ev in events]
        metrics.count_records(item.source.topic for item in batch)
        res = join_batch(
            batch,
            tables.bills,
            s.max_record_bytes,
            ctx=per_event(events),
            clock=stream_time,
            latest=time.time() + s.max_event_ahead_s,
        )
        metrics.count_filers(counted(m for _key, m in res.filers))
        metrics.REPLAYS_SKIPPED.labels("join").inc(res.replays)
        box = outbox(JOIN, events)
        box.count(partial(metrics.count_failures, "join", res.failures))
        box.dead(res.dead)
        box.forward(by_consignee, res.forward)
        box.forward(by_filer, res.filers)
        return box.end(
            tables.bills,
            remember=partial(record_forwarded, res.joined, tables.bills, per_event(events)),
        )

    @app.agent(inputs, name=JOIN)
    async def join_bills(stream: AsyncIterable[EventT]) -> None:
        sweep_due = time.monotonic() + s.bill_sweep_s
        # take_events is on Faust's Stream, not on the AsyncIterable it is typed as here
        async for events in stream.take_events(record_batch, within=s.batch_within_s):  # type: ignore[attr-defined]
            await run(JOIN, join, events)
            if time.monotonic() >= sweep_due:  # between batches: no batch's writes pending
                sweep_due = time.monotonic() + s.bill_sweep_s
                await expire_bills()

    def consignees(events: Sequence[EventT]) -> Outbox:
        box = outbox(CONSIGNEES, events)
        evs, msgs = unpack(events, box)
        dead: Failures = []
        out = consignee_batch(msgs, tables.consignees, ctx=per_event(evs), dead=dead)
        box.parked("consignee", dead)
        box.forward(by_shipper, out)
        return box.end(tables.consignees)

    @app.agent(by_consignee, name=CONSIGNEES)
    async def consignee_history(stream: AsyncIterable[EventT]) -> None:
        # take_events is on Faust's Stream, not on the AsyncIterable it is typed as here
        async for events in stream.take_events(envelope_batch, within=s.batch_within_s):  # type: ignore[attr-defined]
            await run(CONSIGNEES, consignees, events)

    def score(events: Sequence[EventT]) -> Outbox:
        box = outbox(SCORE, events)
        evs, msgs = unpack(events, box)
        dead: Failures = []
        exams: list[Exam] = []
        parcels = shipper_batch(msgs, tables.shippers, ctx=per_event(evs), dead=dead, exams=exams)
        box.parked("shipper", dead)
        event_of = {id(m): ev for ev, m in zip(evs, msgs, strict=True)}
        parcel_events = [event_of[id(p)] for p in parcels]
        keep = undecided(parcels, tables.shippers, ctx=per_event(parcel_events))
        metrics.REPLAYS_SKIPPED.labels("score").inc(len(parcels) - len(keep))
        parcels = [parcels[i] for i in keep]
        parcel_events = [parcel_events[i] for i in keep]
        if not parcels:
            return box.end(tables.shippers, then=partial(metrics.count_exams, exams))
        started = time.perf_counter()
        # one model (and shadow) per batch, even if a promotion lands meanwhile
        scorer, shadow = server.scorer, server.candidate()
        reloaded = rules.refresh()
        if reloaded:
            metrics.RULE_RELOADS.labels(reloaded).inc()
        unscored: Failures = []
        attach_filers(parcels, board)
        res = score_batch(
            parcels,
            scorer,
            pkey,
            rules.rules,
            cap,
            dead=unscored,
            sampler=sampler,
            shadow=shadow,
        )
        drift.observe(scorer, res.scored, time.time())
        if shadow is not None:
            drift.observe(shadow, res.shadowed, time.time())
            metrics.SHADOW_FAILURES.inc(res.shadow_failures)
        metrics.SCORING_SECONDS.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(parcels))
        box.send(scored(res))
        box.parked("score", unscored)
        done = [parcels[i] for i in res.decided]
        entries = decided([p["view"] for p in done], res.decisions, s.topic("entries_topic"))
        box.forward(by_filer, [(m["filer"].encode(), m) for m in entries])
        decided_events = per_event([parcel_events[i] for i in res.decided])

        def count() -> None:
            metrics.count_decisions(res.flagged, res.rule_hits, res.event_times)
            metrics.count_filers(counted(entries))
            metrics.count_exams(exams)

        return box.end(
            tables.shippers,
            remember=partial(
                record_decisions, done, res.flagged, scorer.version, tables.shippers, decided_events
            ),
            then=count,
        )

    @app.agent(by_shipper, name=SCORE)
    async def score_parcels(stream: AsyncIterable[EventT]) -> None:
        # the sample's rates come from the board: a worker scores once its board has read
        # the scorecards already published (as any other worker's has), or after a while
        try:
            await asyncio.wait_for(board_read.wait(), BOARD_WAIT_S)
        except TimeoutError:
            log.warning("scoring before the board of filers has read targeting.filers")
        # take_events is on Faust's Stream, not on the AsyncIterable it is typed as here
        async for events in stream.take_events(envelope_batch, within=s.batch_within_s):  # type: ignore[attr-defined]
            await run(SCORE, score, events)

    def filers(events: Sequence[EventT]) -> Outbox:
        box = outbox(FILERS, events)
        evs, msgs = unpack(events, box)
        cards, failures = filer_batch(
            cast(list[FilerMessage], msgs),  # only filer events come this way
            [ev.message.offset for ev in evs],
            tables.filers,
            rules.rules.filers,
            ctx=per_event(evs),
        )
        box.count(partial(metrics.count_failures, "filer", failures))
        box.send(filer_cards(cards))
        return box.end(tables.filers)

    @app.agent(by_filer, name=FILERS)
    async def filer_history(stream: AsyncIterable[EventT]) -> None:
        # take_events is on Faust's Stream, not on the AsyncIterable it is typed as here
        async for events in stream.take_events(envelope_batch, within=s.batch_within_s):  # type: ignore[attr-defined]
            await run(FILERS, filers, events)

    @app.task
    async def follow_promotions() -> None:
        while True:  # a broker hiccup must not end promotions for the worker's lifetime
            try:
                await follow(s, server)
            except Exception:
                log.exception("models.control reader failed; retrying")
                await asyncio.sleep(2.0)

    @app.task
    async def follow_filer_cards() -> None:
        while True:  # as for promotions: a broker hiccup must not freeze the board
            try:
                await follow_filers(s, board, board_read)
            except Exception:
                log.exception("targeting.filers reader failed; retrying")
                await asyncio.sleep(2.0)

    return tables
