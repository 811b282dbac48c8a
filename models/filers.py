"""Filer scorecards and their evidence: the compliance of a customs broker, measurable and
showable.

A filer (its 3-character code starts the entry number) is measured on what the topics hold:
its entries, the ones filed late or without the estimated arrival (the policy rules on the
decisions), its entries refused as invalid (dead letters whose entry number can still be
read), holds, and exams: targeted (a model or rule chose the parcel) and sampled (the
compliance sample chose it at random). Only the sampled exams give its violation rate,
with a 95% (Wilson) interval; the status compares the late and invalid shares and the
interval's lower bound with thresholds from the rules file, so that a few unlucky exams do
not condemn a filer. Every figure cites its entries (`evidence`).

The worker keeps the same figures live: one owner per filer code folds the filer's events
into a state (`observe_*`, plain dicts in a table) and publishes its scorecard
(`card_of`) to a compacted topic, which every worker reads into a `Board`: filers are few,
so their state is reference data. The board gives each parcel its filer's exam record,
smoothed toward the overall rate (`Board.history`); the offline data-set builder fills a
board through the same functions, so training sees what the worker serves.

The state also counts each filer's entries per event-time week (`models.sampling.week`, the
last WEEKS weeks) and keeps the entries behind each figure (the most recent EVIDENCE per
figure), and the scorecard carries both. From the weeks the board gives every worker the
same `entries_in(week)` for all filers, from which the compliance sample's stratified rates
are set (models/sampling.py). `scorecards`, which the `filers` command computes from the
topics, folds the topics' records into the same state through the same functions
(`fold`), so its figures and evidence are those the owner publishes.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, TypedDict

from models import history
from models.parcel import ParcelView
from models.records import FINDINGS, Record, RecordError, event_epoch, validate
from models.sampling import week as week_of
from models.sampling import wilson

LATE_RULES = ("late_t86", "t86_no_eta")
# a filer's sampled HAWBs remembered, so that an exam outcome (days later) is known as sampled
SAMPLED = 512
# the overall violation rate counts as this many exams in a filer's smoothed rate (beta prior)
PRIOR_EXAMS = 20.0
_ENTRY_NUMBER = re.compile(rb'"entry_number"\s*:\s*"([A-Za-z0-9]{3})(\d{8})"')
_EVENT_DATE = re.compile(rb'"event_time"\s*:\s*"(\d{4}-\d{2}-\d{2})')
# entries cited per figure (late, invalid, sampled and targeted exams): the most recent ones
EVIDENCE = 20
# event-time weeks of entries counted per filer: the current, the previous (the sample's
# rates come from it), and a few more for a replay or rescore of recent weeks
WEEKS = 8
FIGURES = ("late", "invalid", "sampled_exams", "targeted_exams")


@dataclass(frozen=True)
class Thresholds:
    """When a filer is on watch or at risk ([filers] in the rules file)."""

    late_watch: float = 0.02
    late_at_risk: float = 0.10
    invalid_watch: float = 0.01
    invalid_at_risk: float = 0.05
    violation_watch: float = 0.12  # lower bound of the sampled violation rate's interval
    violation_at_risk: float = 0.20


@dataclass
class Scorecard:
    filer: str
    entries: int = 0
    late: int = 0
    invalid: int = 0
    holds: int = 0
    targeted_exams: int = 0
    targeted_violative: int = 0
    sampled_exams: int = 0
    sampled_violative: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)  # exam outcomes by name
    weeks: dict[str, int] = field(default_factory=dict)  # entries per event-time week
    status: str = "ok"
    why: list[str] = field(default_factory=list)
    evidence: list[dict[str, Any]] = field(default_factory=list)

    def shares(self) -> dict[str, float]:
        submitted = self.entries + self.invalid
        low, high = wilson(self.sampled_violative, self.sampled_exams)
        return {
            "late_share": self.late / self.entries if self.entries else 0.0,
            "invalid_share": self.invalid / submitted if submitted else 0.0,
            "sampled_violation_rate": (
                self.sampled_violative / self.sampled_exams if self.sampled_exams else float("nan")
            ),
            "sampled_low": low,
            "sampled_high": high,
        }

    def as_dict(self, evidence: bool = False) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "evidence"}
        out |= self.shares()
        if evidence:
            out["evidence"] = self.evidence
        return out


def named_entry(raw: bytes | None) -> tuple[str, str] | None:
    """(filer code, entry number) of a refused entry, if its bytes still name them."""
    m = _ENTRY_NUMBER.search(raw or b"")
    return (m[1].decode().upper(), (m[1] + m[2]).decode().upper()) if m else None


def entry_date(raw: bytes | None) -> str | None:
    """The event date (YYYY-MM-DD) a refused entry's bytes still show, if any."""
    m = _EVENT_DATE.search(raw or b"")
    return m[1].decode() if m else None


def _raw_of_dead_letter(letter: Mapping[str, Any]) -> bytes:
    try:
        return base64.b64decode(letter.get("original_b64", ""))
    except ValueError:
        return b""


class FilerMessage(TypedDict):
    """Stage to the filer's owner: one event of one filer (keyed by its code).

    'decided': an entry's first decision (its action, the filing rules it broke, whether
    the compliance sample chose it, its event-time week); 'invalid': an entry refused;
    'exam': an exam outcome of one of its entries. `event` names it, so that a replay is
    recognised; `entry_number` and `date` (the entry's event date) are what its evidence
    cites. The fields after `event` are absent from events of older workers."""

    kind: Literal["filer"]
    filer: str
    what: Literal["decided", "invalid", "exam"]
    hawb: str | None
    action: str | None
    rules: list[str]
    outcome: str | None
    event: str
    entry_number: NotRequired[str | None]
    date: NotRequired[str | None]
    week: NotRequired[int | None]
    sampled: NotRequired[bool]
    found: NotRequired[str | None]  # why an invalid entry was refused


def filer_message(
    filer: str,
    what: Literal["decided", "invalid", "exam"],
    event: str,
    hawb: str | None = None,
    action: str | None = None,
    rules: Sequence[str] = (),
    outcome: str | None = None,
    entry: Mapping[str, Any] | None = None,
    sampled: bool | None = None,
    entry_number: str | None = None,
    date: str | None = None,
    found: str | None = None,
) -> FilerMessage:
    """A filer event; with the (valid) `entry`, its number, event date and week."""
    week = None
    if entry is not None:
        entry_number, date = entry["entry_number"], str(entry["event_time"])[:10]
        week = week_of(event_epoch(dict(entry)))
    return {
        "kind": "filer",
        "filer": filer,
        "what": what,
        "hawb": hawb,
        "action": action,
        "rules": list(rules),
        "outcome": outcome,
        "event": event,
        "entry_number": entry_number,
        "date": date,
        "week": week,
        "sampled": action == "sample" if sampled is None else sampled,
        "found": found,
    }


def invalid_message(raw: bytes | None, event: str, found: str) -> FilerMessage | None:
    """The filer event of a refused entry whose bytes still name its filer (else None);
    `found` is the refusal ("field: reason")."""
    named = named_entry(raw)
    if named is None:
        return None
    return filer_message(
        named[0], "invalid", event, entry_number=named[1], date=entry_date(raw), found=found
    )


def decided(
    views: Sequence[ParcelView], decisions: Sequence[Mapping[str, Any]], entries_topic: str
) -> list[FilerMessage]:
    """A scored batch's filer events: one per entry, for the decision its entry made (a
    rescore by the manifest is not another entry)."""
    out = []
    for view, d in zip(views, decisions, strict=True):
        entry = view.get("entry")
        if entry is None or d["source"]["topic"] != entries_topic:
            continue
        out.append(_decided(entry, view["hawb"], d))
    return out


def _decided(entry: Mapping[str, Any], hawb: str, d: Mapping[str, Any]) -> FilerMessage:
    """An entry's decision as its filer's event (the worker's and `scorecards`' alike)."""
    late = [rule for rule in d.get("rules", []) if rule in LATE_RULES]
    sampled = d.get("sample_rate") is not None or d.get("action") == "sample"
    return filer_message(
        entry["filer_code"], "decided", f"decided:{hawb}", hawb, d.get("action"), late,
        entry=entry, sampled=sampled,
    )  # fmt: skip


def exam_message(entry: Mapping[str, Any], hawb: str, outcome: str) -> FilerMessage:
    """An exam outcome of an entry's parcel as its filer's event."""
    return filer_message(
        entry["filer_code"], "exam", f"{outcome}:{hawb}", hawb, outcome=outcome, entry=entry
    )


def counted(msgs: Iterable[FilerMessage]) -> list[tuple[str, str]]:
    """(filer, what) per filer event, for the per-filer series: 'invalid', or for an entry
    decided 'entries', its action ('hold', 'review', 'sample') and the filing rules it broke."""
    out: list[tuple[str, str]] = []
    for m in msgs:
        if m["what"] == "invalid":
            out.append((m["filer"], "invalid"))
        if m["what"] != "decided":
            continue
        out.append((m["filer"], "entries"))
        if m["action"]:
            out.append((m["filer"], m["action"]))
        out += [(m["filer"], rule) for rule in m["rules"]]
    return out


def scorecards(
    entries: Iterable[Mapping[str, Any]],
    decisions: Iterable[Mapping[str, Any]],
    dead_letters: Iterable[Mapping[str, Any]],
    dispositions: Iterable[Mapping[str, Any]],
    thresholds: Thresholds,
    entries_topic: str,
) -> dict[str, Scorecard]:
    """Each filer's scorecard, with the entries behind it, from the topics' records.

    The records become the events the worker sends each filer's owner (an entry's own
    decision, its refusal, its exam outcomes) and are folded with the owner's function, so
    the figures and the evidence are those published on targeting.filers for the same
    records."""
    filed: dict[str, Record] = {}  # HAWB -> its first valid entry
    for raw in entries:
        try:
            rec = validate("entry", raw)
        except RecordError:
            continue  # counted from the dead letters, where the reason is
        filed.setdefault(rec["hawb"], rec)
    msgs: list[FilerMessage] = []
    for d in decisions:
        entry = filed.get(d.get("hawb", ""))
        if entry is not None and d.get("source", {}).get("topic") == entries_topic:
            msgs.append(_decided(entry, d["hawb"], d))
    for letter in dead_letters:
        source = letter.get("source", {})
        if source.get("topic") != entries_topic:
            continue
        event = f"invalid:{source.get('topic')}:{source.get('partition')}:{source.get('offset')}"
        found = f"{letter.get('field')}: {letter.get('reason')}"
        if (m := invalid_message(_raw_of_dead_letter(letter), event, found)) is not None:
            msgs.append(m)
    for d in dispositions:
        entry = filed.get(d.get("hawb", ""))
        if entry is not None:
            msgs.append(exam_message(entry, d["hawb"], str(d.get("outcome"))))
    states: dict[str, dict[str, Any]] = {}
    for m in msgs:
        new = fold(states.get(m["filer"]), m)
        if new is not None:
            states[m["filer"]] = new
    return {code: card_of(code, state, thresholds) for code, state in states.items()}


def status(card: Scorecard, t: Thresholds) -> tuple[str, list[str]]:
    """ok, watch or at risk, and why: the measures past their thresholds."""
    s = card.shares()
    measures = (
        ("late filings", s["late_share"], t.late_watch, t.late_at_risk),
        ("invalid entries", s["invalid_share"], t.invalid_watch, t.invalid_at_risk),
        (
            "sampled violation rate (95% lower bound)",
            s["sampled_low"] if card.sampled_exams else 0.0,
            t.violation_watch,
            t.violation_at_risk,
        ),
    )
    level, why = 0, []
    for name, value, watch, at_risk in measures:
        if value >= at_risk:
            level = 2
            why.append(f"{name} {value:.1%} >= {at_risk:.1%}")
        elif value >= watch:
            level = max(level, 1)
            why.append(f"{name} {value:.1%} >= {watch:.1%}")
    return ("ok", "watch", "at risk")[level], why


def thresholds_from(doc: Mapping[str, Any]) -> Thresholds:
    """[filers] of a rules file; ValueError names an unknown key or a bad value."""
    fields = Thresholds.__dataclass_fields__
    unknown = set(doc) - set(fields)
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}")
    values = {k: float(v) for k, v in doc.items()}
    if any(not 0.0 <= v <= 1.0 for v in values.values()):
        raise ValueError("thresholds are shares, between 0 and 1")
    return Thresholds(**values)


# --- live state: one owner per filer code, read by every worker -------------------------

_COUNTERS = (
    "entries",
    "late",
    "invalid",
    "holds",
    "targeted_exams",
    "targeted_violative",
    "sampled_exams",
    "sampled_violative",
)


def _filer(state: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of a filer's state with every counter present."""
    base = {**dict.fromkeys(_COUNTERS, 0), "outcomes": {}, "sampled": [], "weeks": {}}
    return {**base, "evidence": {}, **(state or {})}


def _cite(s: dict[str, Any], figure: str, m: FilerMessage, found: str) -> None:
    """An entry behind one of the figures: the most recent EVIDENCE per figure are kept."""
    row = {
        "entry_number": m.get("entry_number"),
        "hawb": m["hawb"],
        "date": m.get("date"),
        "found": found,
    }
    rows = s["evidence"].get(figure, [])
    s["evidence"] = {**s["evidence"], figure: [*rows, row][-EVIDENCE:]}


def _count_week(s: dict[str, Any], week: int) -> None:
    """One more entry in an event-time week; only the latest WEEKS weeks are kept (JSON
    object keys: the week numbers as strings)."""
    weeks = {**s["weeks"], str(week): int(s["weeks"].get(str(week), 0)) + 1}
    s["weeks"] = dict(sorted(weeks.items(), key=lambda kv: int(kv[0]))[-WEEKS:])


def observe(state: Mapping[str, Any] | None, m: FilerMessage) -> dict[str, Any]:
    """A filer's state after one of its events. A decided entry is counted (in its week
    too) with its hold and late filing and, when the compliance sample chose it (a sampled
    parcel that is also held stays a hold), remembered as sampled, so that its exam outcome
    (days later) counts as sampled; other exams are targeted. Late filings, invalid
    entries and exams cite their entries."""
    s = _filer(state)
    hawb = m["hawb"] or ""
    if m["what"] == "invalid":
        s["invalid"] += 1
        _cite(s, "invalid", m, f"invalid: {m.get('found') or 'refused'}")
    elif m["what"] == "decided":
        s["entries"] += 1
        if m.get("week") is not None:
            _count_week(s, int(m["week"]))  # type: ignore[arg-type]
        if m["rules"]:
            s["late"] += 1
            _cite(s, "late", m, ", ".join(m["rules"]))
        s["holds"] += int(m["action"] == "hold")
        if m.get("sampled", m["action"] == "sample"):
            s["sampled"] = [*s["sampled"], history.short(hawb)][-SAMPLED:]
    else:
        outcome = m["outcome"] or ""
        kind = "sampled" if history.short(hawb) in s["sampled"] else "targeted"
        s[f"{kind}_exams"] += 1
        s[f"{kind}_violative"] += int(outcome in FINDINGS)
        s["outcomes"] = {**s["outcomes"], outcome: s["outcomes"].get(outcome, 0) + 1}
        _cite(s, f"{kind}_exams", m, f"{kind} exam: {outcome}")
    return s


def fold(state: Mapping[str, Any] | None, m: FilerMessage) -> dict[str, Any] | None:
    """The filer's state after an event, or None for an event it has already counted."""
    if history.replayed(state, m["event"]):
        return None
    return history.remember(observe(state, m), m["event"])


def card_of(code: str, state: Mapping[str, Any] | None, thresholds: Thresholds) -> Scorecard:
    """A filer's current scorecard from its live state, with its entries per week and the
    entries behind its figures (the most recent EVIDENCE of each)."""
    s = _filer(state)
    card = Scorecard(code, outcomes=dict(s["outcomes"]), weeks=dict(s["weeks"]))
    for k in _COUNTERS:
        setattr(card, k, int(s[k]))
    card.evidence = [dict(row) for f in FIGURES for row in s["evidence"].get(f, [])]
    card.status, card.why = status(card, thresholds)
    return card


def _exams(card: Mapping[str, Any]) -> tuple[int, int]:
    """(examined, violative) of a published scorecard: targeted and sampled exams."""
    return (
        int(card.get("targeted_exams", 0)) + int(card.get("sampled_exams", 0)),
        int(card.get("targeted_violative", 0)) + int(card.get("sampled_violative", 0)),
    )


class Board:
    """Every filer's current scorecard, as published, the totals over all filers and every
    filer's entries per event-time week.

    The weekly counts only grow: the board keeps, per filer and week, the highest count any
    scorecard showed, so a scorecard published again with less (an owner that is
    replaying its input, another app writing the same topic) does not take entries away
    from the rates of a sample already under way."""

    def __init__(self) -> None:
        self.cards: dict[str, Mapping[str, Any]] = {}
        self.examined = 0
        self.violative = 0
        self.weeks: dict[int, dict[str, int]] = {}  # week -> filer -> entries
        self._changes: dict[int, int] = {}  # week -> times its counts changed

    def update(self, code: str, card: Mapping[str, Any]) -> None:
        old_n, old_k = _exams(self.cards.get(code, {}))
        new_n, new_k = _exams(card)
        self.examined += new_n - old_n
        self.violative += new_k - old_k
        self.cards[code] = card
        for key, n in (card.get("weeks") or {}).items():
            w, n = int(key), int(n)
            counts = self.weeks.setdefault(w, {})
            if n > counts.get(code, 0):
                counts[code] = n
                self._changes[w] = self._changes.get(w, 0) + 1
        for w in sorted(self.weeks)[:-WEEKS]:  # bounded: the latest WEEKS weeks
            del self.weeks[w]
            self._changes.pop(w, None)

    def entries_in(self, week: int) -> dict[str, int]:
        """Every filer's entries in an event-time week, as the board knows them now: empty
        for a week it has no scorecard of (a worker that has read no scorecard yet, or a
        week older than the latest WEEKS), which samples every filer at the flat share."""
        return dict(self.weeks.get(week, {}))

    def version(self, week: int) -> int:
        """Changes whenever `entries_in(week)` does (a cache key for the rates)."""
        return self._changes.get(week, 0)

    def history(self, code: str) -> dict[str, float]:
        """The filer's exams as of now and its violation rate, smoothed toward the overall
        rate (a beta prior worth PRIOR_EXAMS exams), so a filer with few exams is not
        judged on them; an unknown filer gets the overall rate."""
        n, k = _exams(self.cards.get(code, {}))
        overall = (self.violative + 1.0) / (self.examined + 2.0)
        return {
            "examined": float(n),
            "violative": float(k),
            "violation_rate": (k + PRIOR_EXAMS * overall) / (n + PRIOR_EXAMS),
        }
