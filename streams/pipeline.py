"""The stages as pure functions: join -> consignee history -> shipper history -> score.

Agents hand batches in and send what comes out; tables are passed as mappings, so unit
tests use dicts and the offline data-set builder replays traffic through the same code.
`ctx(i)` returns the context in which the i-th record's table reads and writes happen (the
worker uses it to put each record's state in its own partition).

Every input ends in exactly one place: a decision or a dead letter.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, MutableMapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from models import history
from models.features import ParcelView
from models.nomenclature import VAGUE_TERMS
from models.scoring import Scorer
from models.stream_time import StreamTime
from streams.join import epoch, forwarded, join_record, mark_forwarded, view_of
from streams.publishing import Outgoing, Source, dead_letter, decisions_and_holds
from streams.records import RecordError, decode, entry_value
from streams.rules import HoldCap, RuleSet, merge

Table = MutableMapping[str, Any]
Ctx = Callable[[int], AbstractContextManager[Any]]
Forward = tuple[bytes, dict[str, Any]]  # (next stage's key, message)


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
    # per bill joined: (index of its last record, the bill as written, newest revision)
    joined: dict[str, tuple[int, dict[str, Any], int]] = field(default_factory=dict)
    replays: int = 0  # records already joined and passed on before a crash
    failures: int = 0  # records whose processing raised (dead-lettered with the exception)


def _parties(view: ParcelView | dict[str, Any]) -> tuple[str, str]:
    rec = view.get("entry") or view.get("manifest")
    assert rec is not None
    s, c = rec["shipper"], rec["consignee"]
    return (
        history.shipper_key(s["name"], s["country"]),
        history.consignee_key(c["address"], c.get("zip")),
    )


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
    i: int,
    item: Incoming, rec: dict[str, Any], bills: Table, clock: StreamTime, res: JoinResult
) -> Forward | RecordError | None:
    """One valid record: its message for the next stage, a reason to refuse it, or None
    for a replay already passed on. Writes the bill last, so a failure leaves it alone."""
    hawb = rec["hawb"]
    bill = bills.get(hawb)
    t = epoch(rec["event_time"])
    if item.kind == "disposition":
        if bill is None:
            return RecordError("hawb", f"no parcel known for HAWB {hawb} (never seen or expired)")
        shipper, consignee = _parties(view_of(bill, hawb))
        msg = {
            "t": "outcome",
            "hawb": hawb,
            "outcome": rec["outcome"],
            "shipper": shipper,
            "consignee": consignee,
            "time": t,
            "source": item.source.as_dict(),
        }
        return consignee.encode(), msg
    source = item.source.as_dict()
    if forwarded(bill, Source.ident(source)):
        res.replays += 1
        return None
    partition = item.source.partition
    touched = clock.stamp(partition, t)
    bill, view, revision = join_record(
        bill, item.kind, rec, partition, Source.ident(source), touched
    )
    shipper, consignee = _parties(view)
    msg = {
        "t": "parcel",
        "view": dict(view),
        "revision": revision,
        "shipper": shipper,
        "consignee": consignee,
        "time": t,
        "source": source,
    }
    bills[hawb] = bill
    newest = max(revision, res.joined[hawb][2]) if hawb in res.joined else revision
    res.joined[hawb] = (i, bill, newest)
    clock.observe(partition, t)
    return consignee.encode(), msg


def record_forwarded(
    joined: dict[str, tuple[int, dict[str, Any], int]], bills: Table, ctx: Ctx
) -> None:
    """After the next stage acknowledged a batch's parcels: note it in their bills (the
    bills as the join wrote them, not read again)."""
    for hawb, (i, bill, revision) in joined.items():
        with ctx(i):
            bills[hawb] = mark_forwarded(bill, revision)


def _event(m: dict[str, Any]) -> str:
    """What a stage message counts, named so that its replay is recognised."""
    if m["t"] == "parcel":
        return f"parcel:{m['view']['hawb']}"
    return f"{m['outcome']}:{m['hawb']}"


Failures = list[tuple[dict[str, Any], RecordError]]  # stage messages that raised, and why


def _enrich(
    msgs: Sequence[dict[str, Any]],
    table: Table,
    entity: str,
    ctx: Ctx,
    attach: Callable[[dict[str, Any], Any], None],
    observe: Callable[[dict[str, Any], Any], dict[str, Any]],
    dead: Failures | None,
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
                _enrich_one(m, table, entity, attach, observe)
        except Exception as exc:
            if dead is None:
                raise
            dead.append((m, failed(exc)))
            failures.add(i)
    return failures


def _enrich_one(
    m: dict[str, Any],
    table: Table,
    entity: str,
    attach: Callable[[dict[str, Any], Any], None],
    observe: Callable[[dict[str, Any], Any], dict[str, Any]],
) -> None:
    key = m[entity]
    state = table.get(key)
    parcel = m["t"] == "parcel"
    if parcel:
        attach(m, state)
        if m["revision"] != 1:
            return
    event = _event(m)
    if history.replayed(state, event):
        return
    new = observe(m, state) if parcel else history.observe_outcome(state, m["outcome"])
    table[key] = history.remember(new, event)


def consignee_batch(
    msgs: Sequence[dict[str, Any]],
    consignees: Table,
    ctx: Ctx = no_ctx,
    dead: Failures | None = None,
) -> list[Forward]:
    """Stage 2 (keyed by consignee address): attach and update the consignee's history."""

    def attach(m: dict[str, Any], state: Any) -> None:
        m["view"]["consignee_history"] = history.consignee_features(state, m["time"])

    def observe(m: dict[str, Any], state: Any) -> dict[str, Any]:
        return history.observe_consignee_parcel(state, m["shipper"], m["time"])

    bad = _enrich(msgs, consignees, "consignee", ctx, attach, observe, dead)
    return [(m["shipper"].encode(), m) for i, m in enumerate(msgs) if i not in bad]


def _value(view: dict[str, Any]) -> float:
    if view.get("entry"):
        return entry_value(view["entry"])
    return float(view["manifest"]["declared_value"]) if view.get("manifest") else float("nan")


def _vague(view: dict[str, Any]) -> bool:
    rec = view.get("manifest") or view.get("entry")
    desc = rec["description"] if "description" in rec else rec["lines"][0]["description"]
    words = set(desc.lower().split())
    return bool(words & VAGUE_TERMS) and len(words) <= 3


def shipper_batch(
    msgs: Sequence[dict[str, Any]],
    shippers: Table,
    ctx: Ctx = no_ctx,
    dead: Failures | None = None,
) -> list[dict[str, Any]]:
    """Stage 3 (keyed by shipper): attach and update the shipper's history; parcels out
    (the same message objects, so a caller can find each one's event)."""

    def attach(m: dict[str, Any], state: Any) -> None:
        m["view"]["shipper_history"] = history.shipper_features(state, m["time"])

    def observe(m: dict[str, Any], state: Any) -> dict[str, Any]:
        return history.observe_shipper_parcel(
            state, _value(m["view"]), m["consignee"], _vague(m["view"]), m["time"]
        )

    bad = _enrich(msgs, shippers, "shipper", ctx, attach, observe, dead)
    return [m for i, m in enumerate(msgs) if m["t"] == "parcel" and i not in bad]


@dataclass
class ScoreResult:
    out: list[Outgoing]
    flagged: list[tuple[int, str, str]]  # (index in `decided`, category, action)
    event_times: list[float]  # epoch seconds, per decided parcel
    rule_hits: list[str] = field(default_factory=list)
    decided: list[int] = field(default_factory=list)  # indexes of the parcels decided


def score_batch(
    parcels: Sequence[dict[str, Any]],
    scorer: Scorer,
    pseudonym_key: bytes,
    rules: RuleSet | None = None,
    cap: HoldCap | None = None,
    dead: Failures | None = None,
) -> ScoreResult:
    """Features, model, rules, reasons and the output records for enriched parcels.

    Scored as one batch; if that raises and `dead` is given, each parcel is scored alone
    so that only the ones that raise go to `dead` and the rest are decided.
    """
    try:
        res = _score(parcels, scorer, pseudonym_key, rules, cap)
    except Exception:
        if dead is None or len(parcels) == 0:
            raise
    else:
        res.decided = list(range(len(parcels)))
        return res
    merged = ScoreResult([], [], [])
    for i, p in enumerate(parcels):
        try:
            one = _score([p], scorer, pseudonym_key, rules, cap)
        except Exception as exc:
            dead.append((p, failed(exc)))
            continue
        merged.out += one.out
        merged.flagged += [(len(merged.decided), c, a) for _j, c, a in one.flagged]
        merged.event_times += one.event_times
        merged.rule_hits += one.rule_hits
        merged.decided.append(i)
    return merged


def _score(
    parcels: Sequence[dict[str, Any]],
    scorer: Scorer,
    pseudonym_key: bytes,
    rules: RuleSet | None,
    cap: HoldCap | None,
) -> ScoreResult:
    views = [ParcelView(**p["view"]) for p in parcels]  # type: ignore[typeddict-item]
    scored = scorer.score(views)
    matches = [(rules or RuleSet()).evaluate(v, scored.features[i]) for i, v in enumerate(views)]
    actions, categories = merge(scored.actions, scored.categories, matches)
    if cap is not None:
        for i, (a, c) in enumerate(zip(actions, categories, strict=True)):
            forced = any(m.action == "hold" for m in matches[i])
            if a == "hold" and not forced and not cap.admit(c, int(parcels[i]["time"] // 3600)):  # type: ignore[arg-type]
                actions[i] = "review"
    scored = replace(scored, actions=actions, categories=categories)
    reasons = scorer.reasons(views, scored)
    for i, ms in enumerate(matches):
        if ms:
            reasons[i] = [m.reason for m in ms] + reasons.get(i, [])
    sources = [Source(**p["source"], key=None) for p in parcels]
    out = decisions_and_holds(
        views,
        sources,
        [p["revision"] for p in parcels],
        scored,
        reasons,
        scorer.version,
        pseudonym_key,
        [[m.rule for m in ms] for ms in matches],
    )
    flagged = [
        (i, c, a) for i, (c, a) in enumerate(zip(categories, actions, strict=True)) if a is not None
    ]
    hits = [m.rule for ms in matches for m in ms]
    return ScoreResult(out, flagged, [p["time"] for p in parcels], hits)  # type: ignore[arg-type]


def _decided(parcel: dict[str, Any]) -> str:
    return f"decided:{Source.ident(parcel['source'])}"


def _by_shipper(parcels: Sequence[dict[str, Any]]) -> dict[str, list[int]]:
    """Indexes of a batch's parcels per shipper: one table read and write per shipper."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(parcels):
        groups[p["shipper"]].append(i)
    return groups


def undecided(parcels: Sequence[dict[str, Any]], shippers: Table, ctx: Ctx = no_ctx) -> list[int]:
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
    parcels: Sequence[dict[str, Any]],
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


def dead_letters(dead: Sequence[tuple[Incoming, RecordError]]) -> list[Outgoing]:
    return [dead_letter(item.source, item.raw, err) for item, err in dead]


def failed_letters(dead: Failures) -> list[Outgoing]:
    """Dead letters of stage messages that raised: the source names the input record (its
    topic, partition, offset), the bytes are the stage message that carried it."""
    return [
        dead_letter(Source(**m["source"], key=None), orjson.dumps(m), err) for m, err in dead
    ]
