"""The stages as pure functions: join -> consignee history -> shipper history -> score.

Agents hand batches in and publish what comes out (streams/agents.py); tables are passed
as mappings, so unit tests use dicts and the offline data-set builder replays traffic
through the same code. `ctx(i)` returns the context in which the i-th record's table reads
and writes happen (the worker uses it to put each record's state in its own partition).

Every input ends in exactly one place: a decision or a dead letter.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, MutableMapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple, TypedDict

from models import filers as filer_state
from models import history, parcel
from models.filers import Board, FilerMessage, Scorecard, Thresholds, exam_message, invalid_message
from models.join import Bill, forwarded, join_record, mark_forwarded, view_of
from models.outputs import Decision, Hold, Source, SourceRef, decisions_and_holds
from models.parcel import ParcelView
from models.records import CATEGORIES, FINDINGS, Record, RecordError, decode, event_epoch
from models.rules import HoldCap, RuleSet, merge
from models.sampling import Sampler, reason
from models.scoring import Scored, Scorer, decide
from models.shadow import score_shadow, shadow_decisions
from models.stream_time import StreamTime

log = logging.getLogger(__name__)
Table = MutableMapping[str, Any]
SAMPLE_RULE = "compliance-sample"  # on the decision and hold of a sampled parcel
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
ToFiler = tuple[bytes, FilerMessage]  # (filer code, event) for the filer's owner
Failures = list[tuple[StageMessage, RecordError]]  # stage messages that raised, and why


class Exam(NamedTuple):
    """An exam outcome of a held parcel, with the category and model of its hold."""

    category: str
    model_version: str
    outcome: str

    @property
    def seizure(self) -> bool:
        return self.outcome in FINDINGS

    @property
    def hit(self) -> bool:
        """The exam found what the hold was for."""
        return FINDINGS.get(self.outcome) == self.category


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
    filers: list[ToFiler] = field(default_factory=list)  # invalid entries, exam outcomes
    # per bill joined: (index of its last record, the bill as written, revisions passed on)
    joined: dict[str, tuple[int, Bill, list[int]]] = field(default_factory=dict)
    replays: int = 0  # records already joined and passed on before a crash
    failures: int = 0  # records whose processing raised (dead-lettered with the exception)


def failed(exc: Exception) -> RecordError:
    """The dead-letter reason of a record whose processing raised: the record is parked
    with the exception, the rest of its batch goes on (an agent must not die of one)."""
    return RecordError("record", f"could not be processed ({type(exc).__name__}: {exc})")


def join_batch(
    batch: Sequence[Incoming],
    bills: Table,
    max_bytes: int,
    ctx: Ctx = no_ctx,
    clock: StreamTime | None = None,
    latest: float | None = None,
) -> JoinResult:
    """Stage 1 (keyed by HAWB): validate, join manifest and entry, look up dispositions.

    `clock` keeps each partition's stream time (bills expire by it); event times after
    `latest` are refused. A record whose processing raises is dead-lettered with the
    exception, and its bill is left as it was.
    """
    res = JoinResult()
    clock = clock if clock is not None else StreamTime()
    for i, item in enumerate(batch):
        try:
            rec = decode(item.kind, item.raw, max_bytes, latest)
            _check_key(item.source.key, rec["hawb"])
        except RecordError as err:
            res.dead.append((item, err))
            continue
        try:
            with ctx(i):
                out = _join_one(i, item, rec, bills, clock, res)
        except Exception as exc:
            res.dead.append((item, failed(exc)))
            res.failures += 1
            continue
        if isinstance(out, RecordError):
            res.dead.append((item, out))
        elif out is not None:
            res.forward.append(out)
    for item, why in res.dead:
        if item.kind != "entry":
            continue
        event = f"invalid:{Source.ident(item.source.as_dict())}"
        if (m := invalid_message(item.raw, event, str(why))) is not None:
            res.filers.append((m["filer"].encode(), m))
    clock.advance()
    return res


def _check_key(key: bytes | None, hawb: str) -> None:
    """A bill's records meet only if they share a partition, so each must be keyed by its
    HAWB as the decoder normalises it (upper case): anything else could never be joined."""
    if key != hawb.encode():
        shown = "no key" if key is None else f"key {key.decode(errors='replace')[:40]!r}"
        raise RecordError(
            "key", f"{shown} is not the record's HAWB {hawb!r} (key records by their HAWB)"
        )


def _join_one(
    i: int, item: Incoming, rec: Record, bills: Table, clock: StreamTime, res: JoinResult
) -> Forward | RecordError | None:
    """One valid record: its message for the next stage, a reason to refuse it, or None
    for a replay already passed on. Writes the bill last, so a failure leaves it alone."""
    hawb = rec["hawb"]
    bill = bills.get(hawb)
    t = event_epoch(rec)
    if item.kind == "disposition":
        if bill is None:
            return RecordError("hawb", f"no parcel known for HAWB {hawb} (never seen or expired)")
        view = view_of(bill, hawb)
        shipper, consignee = parcel.keys(view)
        entry = view.get("entry")
        if entry is not None:  # the filer's exam record
            exam = exam_message(entry, hawb, rec["outcome"])
            res.filers.append((exam["filer"].encode(), exam))
        outcome: OutcomeMessage = {
            "kind": "outcome",
            "hawb": hawb,
            "outcome": rec["outcome"],
            "shipper_key": shipper,
            "consignee_key": consignee,
            "event_epoch": t,
            "source": item.source.as_dict(),
        }
        return consignee.encode(), outcome
    source = item.source.as_dict()
    if forwarded(bill, Source.ident(source)):
        res.replays += 1
        return None
    partition = item.source.partition
    touched = clock.stamp(partition, t)
    bill, view, revision = join_record(
        bill, item.kind, rec, partition, Source.ident(source), touched
    )
    shipper, consignee = parcel.keys(view)
    msg: ParcelMessage = {
        "kind": "parcel",
        "view": view,
        "revision": revision,
        "shipper_key": shipper,
        "consignee_key": consignee,
        "event_epoch": t,
        "source": source,
    }
    bills[hawb] = bill
    passed = res.joined[hawb][2] if hawb in res.joined else []
    res.joined[hawb] = (i, bill, [*passed, revision])
    clock.observe(partition, t)
    return consignee.encode(), msg


def record_forwarded(
    joined: dict[str, tuple[int, Bill, list[int]]], bills: Table, ctx: Ctx
) -> None:
    """After the next stage acknowledged a batch's parcels: note it in their bills (the
    bills as the join wrote them, not read again)."""
    for hawb, (i, bill, revisions) in joined.items():
        with ctx(i):
            bills[hawb] = mark_forwarded(bill, revisions)


def _event(m: StageMessage) -> str:
    """What a stage message counts, named so that its replay is recognised."""
    if m["kind"] == "parcel":
        return f"parcel:{m['view']['hawb']}"
    return f"{m['outcome']}:{m['hawb']}"


Entity = Literal["shipper_key", "consignee_key"]
Attach = Callable[[ParcelMessage, Any], None]
Observe = Callable[[ParcelMessage, Any], dict[str, Any]]
Examined = Callable[[OutcomeMessage, Any], None]


def _ignore(_m: OutcomeMessage, _state: Any) -> None:
    return None


def _enrich(
    msgs: Sequence[StageMessage],
    table: Table,
    entity: Entity,
    ctx: Ctx,
    attach: Attach,
    observe: Observe,
    dead: Failures | None,
    examined: Examined = _ignore,
) -> set[int]:
    """One history stage: per message, attach the entity's history, then count the message.

    Parcels get the history as it was before them (`attach`); first revisions are counted
    (`observe`), rescores are not another parcel. Dispositions update the seizure counts.
    An event the history already counted (a replay after a crash) is not counted again.
    A message whose processing raises goes to `dead` (re-raised without it) and is
    returned by index; the entity's history is left as it was.
    """
    failures: set[int] = set()
    for i, m in enumerate(msgs):
        try:
            with ctx(i):
                _enrich_one(m, table, entity, attach, observe, examined)
        except Exception as exc:
            if dead is None:
                raise
            dead.append((m, failed(exc)))
            failures.add(i)
    return failures


def _enrich_one(
    m: StageMessage,
    table: Table,
    entity: Entity,
    attach: Attach,
    observe: Observe,
    examined: Examined,
) -> None:
    key = m[entity]
    state = table.get(key)
    if m["kind"] == "parcel":
        attach(m, state)
        if m["revision"] != 1:
            return
    event = _event(m)
    if history.replayed(state, event):
        return
    if m["kind"] == "parcel":
        new = observe(m, state)
    else:
        examined(m, state)
        new = history.observe_outcome(state, m["outcome"])
    table[key] = history.remember(new, event)


def consignee_batch(
    msgs: Sequence[StageMessage],
    consignees: Table,
    ctx: Ctx = no_ctx,
    dead: Failures | None = None,
) -> list[Forward]:
    """Stage 2 (keyed by consignee address): attach and update the consignee's history."""

    def attach(m: ParcelMessage, state: Any) -> None:
        m["view"]["consignee_history"] = history.consignee_features(
            state, m["event_epoch"], m["view"]["hawb"]
        )

    def observe(m: ParcelMessage, state: Any) -> dict[str, Any]:
        return history.observe_consignee_parcel(
            state, m["view"], m["shipper_key"], m["event_epoch"]
        )

    bad = _enrich(msgs, consignees, "consignee_key", ctx, attach, observe, dead)
    return [(m["shipper_key"].encode(), m) for i, m in enumerate(msgs) if i not in bad]


def shipper_batch(
    msgs: Sequence[StageMessage],
    shippers: Table,
    ctx: Ctx = no_ctx,
    dead: Failures | None = None,
    exams: list[Exam] | None = None,
) -> list[ParcelMessage]:
    """Stage 3 (keyed by shipper): attach and update the shipper's history; parcels out
    (the same message objects, so a caller can find each one's event). Outcomes of held
    parcels go to `exams`, each counted once (a replayed disposition is not)."""

    def attach(m: ParcelMessage, state: Any) -> None:
        m["view"]["shipper_history"] = history.shipper_features(state, m["event_epoch"])

    def observe(m: ParcelMessage, state: Any) -> dict[str, Any]:
        return history.observe_shipper_parcel(
            state, m["view"], m["consignee_key"], m["event_epoch"]
        )

    def examined(m: OutcomeMessage, state: Any) -> None:
        hold = history.held(state, m["hawb"])
        if hold is not None and exams is not None:
            exams.append(Exam(*hold, m["outcome"]))

    bad = _enrich(msgs, shippers, "shipper_key", ctx, attach, observe, dead, examined)
    return [m for i, m in enumerate(msgs) if i not in bad and m["kind"] == "parcel"]


def filer_batch(
    msgs: Sequence[FilerMessage],
    offsets: Sequence[int],
    filers: Table,
    thresholds: Thresholds,
    ctx: Ctx = no_ctx,
) -> tuple[list[Scorecard], int]:
    """The filers' owner (keyed by filer code): fold each event into its filer's state and
    return the current scorecard of every filer touched, and how many events raised.

    `offsets[i]` is the input offset of the i-th event: a filer's state keeps the last one
    applied, so a replay of the owner's own input is skipped whole; an event replayed
    upstream is recognised by its name (history.replayed). An event whose processing
    raises is logged and skipped: the filer's state is left as it was.
    """
    touched: dict[str, int] = {}  # filer -> index of one of its events (its partition)
    through: dict[str, int] = {}  # filer -> last offset applied before this batch
    failures = 0
    for i, m in enumerate(msgs):
        code = m["filer"]
        try:
            with ctx(i):
                state = filers.get(code)
                done = through.setdefault(code, (state or {}).get("through", -1))
                if offsets[i] <= done:
                    continue
                new = filer_state.fold(state, m)
                if new is None:  # replayed upstream
                    continue
                new["through"] = offsets[i]
                filers[code] = new
        except Exception:
            log.exception("filer event of %s could not be processed; skipped", code)
            failures += 1
            continue
        touched[code] = i
    cards = []
    for code, i in touched.items():
        with ctx(i):
            cards.append(filer_state.card_of(code, filers.get(code), thresholds))
    return cards, failures


def attach_filers(parcels: Sequence[ParcelMessage], board: Board) -> None:
    """Each parcel with an entry gets its filer's exam record from the board as it is now
    (the worker's copy of targeting.filers; the data-set builder's own board offline)."""
    for p in parcels:
        entry = p["view"].get("entry")
        if entry is not None:
            p["view"]["filer_history"] = board.history(entry["filer_code"])


@dataclass
class ScoreResult:
    decisions: list[Decision]
    holds: list[Hold]
    flagged: list[tuple[int, str, str]]  # (index in `decided`, category, action)
    event_times: list[float]  # epoch seconds, per decided parcel
    rule_hits: list[str] = field(default_factory=list)
    decided: list[int] = field(default_factory=list)  # indexes of the parcels decided
    scored: list[Scored] = field(default_factory=list)  # the model's output, for monitoring
    shadowed: list[Scored] = field(default_factory=list)  # the shadow model's, if any
    shadow_failures: int = 0  # batches the shadow model failed on (decided without it)


def score_batch(
    parcels: Sequence[ParcelMessage],
    scorer: Scorer,
    pseudonym_key: bytes,
    rules: RuleSet | None = None,
    cap: HoldCap | None = None,
    dead: Failures | None = None,
    sampler: Sampler | None = None,
    shadow: Scorer | None = None,
) -> ScoreResult:
    """Features, model, rules, compliance sample, reasons and the output records for
    enriched parcels; with a `shadow` model, its scores and would-be action on each
    decision (models/shadow.py).

    Scored as one batch; if that raises and `dead` is given, each parcel is scored alone
    so that only the ones that raise go to `dead` and the rest are decided.
    """
    try:
        res = _score(parcels, scorer, pseudonym_key, rules, cap, sampler, shadow)
    except Exception:
        if dead is None or len(parcels) == 0:
            raise
    else:
        res.decided = list(range(len(parcels)))
        return res
    merged = ScoreResult([], [], [], [])
    for i, p in enumerate(parcels):
        try:
            one = _score([p], scorer, pseudonym_key, rules, cap, sampler, shadow)
        except Exception as exc:
            dead.append((p, failed(exc)))
            continue
        merged.decisions += one.decisions
        merged.holds += one.holds
        merged.flagged += [(len(merged.decided), c, a) for _j, c, a in one.flagged]
        merged.event_times += one.event_times
        merged.rule_hits += one.rule_hits
        merged.scored += one.scored
        merged.shadowed += one.shadowed
        merged.shadow_failures += one.shadow_failures
        merged.decided.append(i)
    return merged


def _score(
    parcels: Sequence[ParcelMessage],
    scorer: Scorer,
    pseudonym_key: bytes,
    rules: RuleSet | None,
    cap: HoldCap | None,
    sampler: Sampler | None,
    shadow: Scorer | None,
) -> ScoreResult:
    views = [p["view"] for p in parcels]
    rules = rules or RuleSet()
    scored = scorer.score(views)
    keys = [(p["shipper_key"], p["consignee_key"]) for p in parcels]
    trust = [rules.trust(v, k) for v, k in zip(views, keys, strict=True)]
    if any(trust):  # the model's hold thresholds raised; rules and the sample still apply
        raised = {
            c: {**t, "hold": t["hold"] * rules.trust_factor} for c, t in scorer.thresholds.items()
        }
        rows = [i for i, t in enumerate(trust) if t]
        trusted_actions, trusted_categories = decide(scored.scores[rows], raised)
        for i, a, c in zip(rows, trusted_actions, trusted_categories, strict=True):
            scored.actions[i], scored.categories[i] = a, c
    matches = rules.evaluate_batch(views, scored.features, keys)
    shadowed: list[Scored] = []
    if shadow is not None:
        try:  # a failing candidate must not cost a decision: they go out without it
            shadowed.append(score_shadow(shadow, scorer, views, scored, matches))
        except Exception:
            log.exception("shadow model %s failed on a batch; not on its decisions", shadow.version)
    actions, categories = merge(scored.actions, scored.categories, matches)
    if cap is not None:
        for i, (a, c) in enumerate(zip(actions, categories, strict=True)):
            forced = any(m.action == "hold" for m in matches[i])
            hour = int(parcels[i]["event_epoch"] // 3600)
            if a == "hold" and c is not None and not forced and not cap.admit(c, hour):
                actions[i] = "review"
    sampled = [sampler.rate(v, rules.sampling) if sampler else None for v in views]
    names = [[m.rule for m in ms] for ms in matches]
    for i, rate in enumerate(sampled):
        if rate is not None:  # examined whatever its score: a hold stays a hold
            names[i].append(SAMPLE_RULE)
            if actions[i] != "hold":
                actions[i] = "sample"
                categories[i] = categories[i] or CATEGORIES[int(scored.scores[i].argmax())]
    scored = replace(scored, actions=actions, categories=categories)
    reasons = scorer.reasons(views, scored)
    for i, ms in enumerate(matches):
        said = [reason(views[i], rate, rules.sampling)] if (rate := sampled[i]) else []
        if trust[i]:
            said.append(
                f"trusted party '{trust[i]}': model hold threshold raised {rules.trust_factor:g}x"
            )
        if ms or said:
            reasons[i] = said + [m.reason for m in ms] + reasons.get(i, [])
    decisions, holds = decisions_and_holds(
        views,
        [p["source"] for p in parcels],
        [p["revision"] for p in parcels],
        scored,
        reasons,
        scorer.version,
        pseudonym_key,
        names,
        keys=keys,
        sampled=sampled,
        trusted=trust,
    )
    if shadow is not None and shadowed:
        for d, sd in zip(decisions, shadow_decisions(shadow.version, shadowed[0]), strict=True):
            d["shadow"] = sd
    flagged = [
        (i, c, a)
        for i, (c, a) in enumerate(zip(categories, actions, strict=True))
        if a is not None and c is not None
    ]
    hits = [name for ns in names for name in ns]
    return ScoreResult(
        decisions,
        holds,
        flagged,
        [p["event_epoch"] for p in parcels],
        hits,
        scored=[scored],
        shadowed=shadowed,
        shadow_failures=int(shadow is not None and not shadowed),
    )


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
    model_version: str,
    shippers: Table,
    ctx: Ctx = no_ctx,
) -> None:
    """After the decisions are acknowledged: remember them, and count holds in the
    shipper's history (shown to analysts, not a model feature) with their category and
    `model_version`, for the exam outcomes that will answer them."""
    held = {i: category for i, category, action in flagged if action == "hold"}
    for key, idx in _by_shipper(parcels).items():
        with ctx(idx[0]):
            state = shippers.get(key) or {}
            for i in idx:
                p = parcels[i]
                event = f"hold:{p['view']['hawb']}:{p['revision']}"
                if i in held and not history.replayed(state, event):
                    hold = history.observe_hold(state, p["view"]["hawb"], held[i], model_version)
                    state = history.remember(hold, event)
                state = history.remember(state, _decided(p))
            shippers[key] = state
