"""The stages as pure functions: join -> consignee history -> shipper history -> score.

Agents hand batches in and publish what comes out (streams/agents.py); tables are passed
as mappings, so unit tests use dicts and the offline data-set builder replays traffic
through the same code.
`ctx(i)` returns the context in which the i-th record's table reads and writes happen (the
worker uses it to put each record's state in its own partition).

Every input ends in exactly one place: a decision or a dead letter.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, MutableMapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypedDict

from models import history, parcel
from models.join import Bill, forwarded, join_record, mark_forwarded, view_of
from models.outputs import Decision, Hold, Source, SourceRef, decisions_and_holds
from models.parcel import ParcelView, epoch
from models.records import RecordError, decode
from models.rules import HoldCap, RuleSet, merge
from models.scoring import Scorer

Table = MutableMapping[str, Any]
Ctx = Callable[[int], AbstractContextManager[Any]]


class ParcelMessage(TypedDict):
    """Stage to stage: a parcel (one revision of a bill) to enrich, then score."""

    kind: Literal["parcel"]
    view: ParcelView
    revision: int
    shipper_key: str
    consignee_key: str
    event_epoch: float  # event time of the record that made this revision (epoch seconds)
    source: SourceRef


class OutcomeMessage(TypedDict):
    """Stage to stage: an exam outcome, for the histories of its bill's parties."""

    kind: Literal["outcome"]
    hawb: str
    outcome: str
    shipper_key: str
    consignee_key: str
    event_epoch: float
    source: SourceRef


StageMessage = ParcelMessage | OutcomeMessage
Forward = tuple[bytes, StageMessage]  # (next stage's key, message)


def no_ctx(_i: int) -> AbstractContextManager[Any]:
    return nullcontext()


@dataclass(frozen=True)
class Incoming:
    kind: str  # "manifest", "entry" or "disposition"
    source: Source
    raw: bytes | None


@dataclass
class JoinResult:
    forward: list[Forward] = field(default_factory=list)
    dead: list[tuple[Incoming, RecordError]] = field(default_factory=list)
    newest: float = 0.0  # the latest event time joined: stream time, for expiry
    # per bill joined: (index of its last record, the bill as written, newest revision)
    joined: dict[str, tuple[int, Bill, int]] = field(default_factory=dict)
    replays: int = 0  # records already joined and passed on before a crash


def join_batch(
    batch: Sequence[Incoming], bills: Table, max_bytes: int, ctx: Ctx = no_ctx
) -> JoinResult:
    """Stage 1 (keyed by HAWB): validate, join manifest and entry, look up dispositions."""
    res = JoinResult()
    for i, item in enumerate(batch):
        try:
            rec = decode(item.kind, item.raw, max_bytes)
        except RecordError as err:
            res.dead.append((item, err))
            continue
        hawb = rec["hawb"]
        with ctx(i):
            bill = bills.get(hawb)
            if item.kind == "disposition":
                if bill is None:
                    res.dead.append(
                        (
                            item,
                            RecordError(
                                "hawb", f"no parcel known for HAWB {hawb} (never seen or expired)"
                            ),
                        )
                    )
                    continue
                shipper, consignee = parcel.keys(view_of(bill, hawb))
                msg: StageMessage = {
                    "kind": "outcome",
                    "hawb": hawb,
                    "outcome": rec["outcome"],
                    "shipper_key": shipper,
                    "consignee_key": consignee,
                    "event_epoch": epoch(rec["event_time"]),
                    "source": item.source.as_dict(),
                }
            else:
                source = item.source.as_dict()
                if forwarded(bill, Source.ident(source)):
                    res.replays += 1
                    continue
                bill, view, revision = join_record(
                    bill, item.kind, rec, item.source.partition, Source.ident(source)
                )
                newest = max(revision, res.joined[hawb][2]) if hawb in res.joined else revision
                res.joined[hawb] = (i, bill, newest)
                res.newest = max(res.newest, bill["last_seen"])
                bills[hawb] = bill
                shipper, consignee = parcel.keys(view)
                msg = {
                    "kind": "parcel",
                    "view": view,
                    "revision": revision,
                    "shipper_key": shipper,
                    "consignee_key": consignee,
                    "event_epoch": epoch(rec["event_time"]),
                    "source": source,
                }
        res.forward.append((consignee.encode(), msg))
    return res


def record_forwarded(joined: dict[str, tuple[int, Bill, int]], bills: Table, ctx: Ctx) -> None:
    """After the next stage acknowledged a batch's parcels: note it in their bills (the
    bills as the join wrote them, not read again)."""
    for hawb, (i, bill, revision) in joined.items():
        with ctx(i):
            bills[hawb] = mark_forwarded(bill, revision)


def _event(m: StageMessage) -> str:
    """What a stage message counts, named so that its replay is recognised."""
    if m["kind"] == "parcel":
        return f"parcel:{m['view']['hawb']}"
    return f"{m['outcome']}:{m['hawb']}"


def _enrich(
    msgs: Sequence[StageMessage],
    table: Table,
    entity: Literal["shipper_key", "consignee_key"],
    ctx: Ctx,
    attach: Callable[[ParcelMessage, Any], None],
    observe: Callable[[ParcelMessage, Any], dict[str, Any]],
) -> None:
    """One history stage: per message, attach the entity's history, then count the message.

    Parcels get the history as it was before them (`attach`); first revisions are counted
    (`observe`), rescores are not another parcel. Dispositions update the seizure counts.
    An event the history already counted (a replay after a crash) is not counted again.
    """
    for i, m in enumerate(msgs):
        key = m[entity]
        with ctx(i):
            state = table.get(key)
            if m["kind"] == "parcel":
                attach(m, state)
                if m["revision"] != 1:
                    continue
            event = _event(m)
            if history.replayed(state, event):
                continue
            if m["kind"] == "parcel":
                new = observe(m, state)
            else:
                new = history.observe_outcome(state, m["outcome"])
            table[key] = history.remember(new, event)


def consignee_batch(
    msgs: Sequence[StageMessage], consignees: Table, ctx: Ctx = no_ctx
) -> list[Forward]:
    """Stage 2 (keyed by consignee address): attach and update the consignee's history."""

    def attach(m: ParcelMessage, state: Any) -> None:
        m["view"]["consignee_history"] = history.consignee_features(state, m["event_epoch"])

    def observe(m: ParcelMessage, state: Any) -> dict[str, Any]:
        return history.observe_consignee_parcel(state, m["shipper_key"], m["event_epoch"])

    _enrich(msgs, consignees, "consignee_key", ctx, attach, observe)
    return [(m["shipper_key"].encode(), m) for m in msgs]


def shipper_batch(
    msgs: Sequence[StageMessage], shippers: Table, ctx: Ctx = no_ctx
) -> list[ParcelMessage]:
    """Stage 3 (keyed by shipper): attach and update the shipper's history; parcels out."""

    def attach(m: ParcelMessage, state: Any) -> None:
        m["view"]["shipper_history"] = history.shipper_features(state, m["event_epoch"])

    def observe(m: ParcelMessage, state: Any) -> dict[str, Any]:
        return history.observe_shipper_parcel(
            state, m["view"], m["consignee_key"], m["event_epoch"]
        )

    _enrich(msgs, shippers, "shipper_key", ctx, attach, observe)
    return [m for m in msgs if m["kind"] == "parcel"]


@dataclass
class ScoreResult:
    decisions: list[Decision]
    holds: list[Hold]
    flagged: list[tuple[int, str, str]]  # (index in batch, category, action)
    rule_hits: list[str] = field(default_factory=list)

    @property
    def event_times(self) -> list[str]:
        return [d["event_time"] for d in self.decisions]


def score_batch(
    parcels: Sequence[ParcelMessage],
    scorer: Scorer,
    pseudonym_key: bytes,
    rules: RuleSet | None = None,
    cap: HoldCap | None = None,
) -> ScoreResult:
    """Features, model, rules, reasons and the output records for enriched parcels."""
    views = [p["view"] for p in parcels]
    scored = scorer.score(views)
    matches = [(rules or RuleSet()).evaluate(v, scored.features[i]) for i, v in enumerate(views)]
    actions, categories = merge(scored.actions, scored.categories, matches)
    if cap is not None:
        for i, (a, c) in enumerate(zip(actions, categories, strict=True)):
            forced = any(m.action == "hold" for m in matches[i])
            hour = int(parcels[i]["event_epoch"] // 3600)
            if a == "hold" and c is not None and not forced and not cap.admit(c, hour):
                actions[i] = "review"
    scored = replace(scored, actions=actions, categories=categories)
    reasons = scorer.reasons(views, scored)
    for i, ms in enumerate(matches):
        if ms:
            reasons[i] = [m.reason for m in ms] + reasons.get(i, [])
    decisions, holds = decisions_and_holds(
        views,
        [p["source"] for p in parcels],
        [p["revision"] for p in parcels],
        scored,
        reasons,
        scorer.version,
        pseudonym_key,
        [[m.rule for m in ms] for ms in matches],
    )
    flagged = [
        (i, c, a)
        for i, (c, a) in enumerate(zip(categories, actions, strict=True))
        if a is not None and c is not None
    ]
    hits = [m.rule for ms in matches for m in ms]
    return ScoreResult(decisions, holds, flagged, hits)


def _decided(p: ParcelMessage) -> str:
    return f"decided:{Source.ident(p['source'])}"


def _by_shipper(parcels: Sequence[ParcelMessage]) -> dict[str, list[int]]:
    """Indexes of a batch's parcels per shipper: one table read and write per shipper."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(parcels):
        groups[p["shipper_key"]].append(i)
    return groups


def undecided(parcels: Sequence[ParcelMessage], shippers: Table, ctx: Ctx = no_ctx) -> list[int]:
    """Indexes of the parcels whose decision is not known to be published.

    `record_decisions` remembers a decision only after the broker acknowledged it, so
    skipping a remembered one never loses a decision: it only drops a crash replay's
    duplicate. A replay older than the shipper's RECENT events is decided again.
    """
    keep = []
    for key, idx in _by_shipper(parcels).items():
        with ctx(idx[0]):
            state = shippers.get(key)
        keep += [i for i in idx if not history.replayed(state, _decided(parcels[i]))]
    return sorted(keep)


def record_decisions(
    parcels: Sequence[ParcelMessage],
    flagged: Sequence[tuple[int, str, str]],
    shippers: Table,
    ctx: Ctx = no_ctx,
) -> None:
    """After the decisions are acknowledged: remember them, and count holds in the
    shipper's history (shown to analysts, not a model feature)."""
    held = {i for i, _category, action in flagged if action == "hold"}
    for key, idx in _by_shipper(parcels).items():
        with ctx(idx[0]):
            state = shippers.get(key) or {}
            for i in idx:
                p = parcels[i]
                event = f"hold:{p['view']['hawb']}:{p['revision']}"
                if i in held and not history.replayed(state, event):
                    state = history.remember(history.observe_hold(state), event)
                state = history.remember(state, _decided(p))
            shippers[key] = state
