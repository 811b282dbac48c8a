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
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from models import history
from models.parcel import ParcelView
from models.records import FINDINGS, RecordError, validate
from models.sampling import wilson

LATE_RULES = ("late_t86", "t86_no_eta")
# a filer's sampled HAWBs remembered, so that an exam outcome (days later) is known as sampled
SAMPLED = 512
# the overall violation rate counts as this many exams in a filer's smoothed rate (beta prior)
PRIOR_EXAMS = 20.0
_ENTRY_NUMBER = re.compile(rb'"entry_number"\s*:\s*"([A-Za-z0-9]{3})(\d{8})"')


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


def _filer_of_dead_letter(letter: Mapping[str, Any]) -> tuple[str, str] | None:
    try:
        return named_entry(base64.b64decode(letter.get("original_b64", "")))
    except ValueError:
        return None


class FilerMessage(TypedDict):
    """Stage to the filer's owner: one event of one filer (keyed by its code).

    'decided': an entry's first decision (its action, the filing rules it broke);
    'invalid': an entry refused; 'exam': an exam outcome of one of its entries. `event`
    names it, so that a replay is recognised."""

    kind: Literal["filer"]
    filer: str
    what: Literal["decided", "invalid", "exam"]
    hawb: str | None
    action: str | None
    rules: list[str]
    outcome: str | None
    event: str


def filer_message(
    filer: str,
    what: Literal["decided", "invalid", "exam"],
    event: str,
    hawb: str | None = None,
    action: str | None = None,
    rules: Sequence[str] = (),
    outcome: str | None = None,
) -> FilerMessage:
    return {
        "kind": "filer",
        "filer": filer,
        "what": what,
        "hawb": hawb,
        "action": action,
        "rules": list(rules),
        "outcome": outcome,
        "event": event,
    }


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
        late = [rule for rule in d["rules"] if rule in LATE_RULES]
        event = f"decided:{view['hawb']}"
        filer = entry["filer_code"]
        out.append(filer_message(filer, "decided", event, view["hawb"], d["action"], late))
    return out


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
    """Each filer's scorecard, with the entries behind it, from the topics' records."""
    cards: dict[str, Scorecard] = {}
    filed: dict[str, tuple[str, str, str]] = {}  # HAWB -> (filer, entry number, date)
    for raw in entries:
        try:
            rec = validate("entry", raw)
        except RecordError:
            continue  # counted from the dead letters, where the reason is
        if rec["hawb"] not in filed:
            filed[rec["hawb"]] = (rec["filer_code"], rec["entry_number"], rec["event_time"][:10])
            cards.setdefault(rec["filer_code"], Scorecard(rec["filer_code"])).entries += 1

    def cite(hawb: str, found: str) -> Scorecard:
        filer, number, day = filed[hawb]
        card = cards[filer]
        card.evidence.append({"entry_number": number, "hawb": hawb, "date": day, "found": found})
        return card

    late: set[str] = set()
    held: set[str] = set()
    sampled: set[str] = set()
    for d in decisions:
        hawb = d["hawb"]
        if hawb not in filed:
            continue
        for rule in d.get("rules", []):
            if rule in LATE_RULES and hawb not in late:
                late.add(hawb)
                cite(hawb, rule).late += 1
        if d.get("sample_rate") is not None:
            sampled.add(hawb)
        if d.get("action") == "hold" and hawb not in held:
            held.add(hawb)
            cards[filed[hawb][0]].holds += 1
    for letter in dead_letters:
        if letter.get("source", {}).get("topic") != entries_topic:
            continue
        named = _filer_of_dead_letter(letter)
        if named is None:
            continue
        card = cards.setdefault(named[0], Scorecard(named[0]))
        card.invalid += 1
        card.evidence.append(
            {
                "entry_number": named[1],
                "hawb": None,
                "date": str(letter.get("dead_lettered_at", ""))[:10],
                "found": f"invalid: {letter.get('field')}: {letter.get('reason')}",
            }
        )
    examined: set[str] = set()
    for d in dispositions:
        hawb = d.get("hawb", "")
        if hawb not in filed or hawb in examined:
            continue
        examined.add(hawb)
        violative = d.get("outcome") in FINDINGS
        kind = "sampled" if hawb in sampled else "targeted"
        card = cite(hawb, f"{kind} exam: {d.get('outcome')}")
        card.outcomes[str(d.get("outcome"))] = card.outcomes.get(str(d.get("outcome")), 0) + 1
        if kind == "sampled":
            card.sampled_exams += 1
            card.sampled_violative += violative
        else:
            card.targeted_exams += 1
            card.targeted_violative += violative
    for card in cards.values():
        card.status, card.why = status(card, thresholds)
    return cards


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
    return {**dict.fromkeys(_COUNTERS, 0), "outcomes": {}, "sampled": [], **(state or {})}


def observe(state: Mapping[str, Any] | None, m: FilerMessage) -> dict[str, Any]:
    """A filer's state after one of its events. A decided entry is counted with its hold
    and late filing and, when the compliance sample chose it, remembered as sampled, so
    that its exam outcome (days later) counts as sampled; other exams are targeted."""
    s = _filer(state)
    hawb = m["hawb"] or ""
    if m["what"] == "invalid":
        s["invalid"] += 1
    elif m["what"] == "decided":
        s["entries"] += 1
        s["late"] += int(bool(m["rules"]))
        s["holds"] += int(m["action"] == "hold")
        if m["action"] == "sample":
            s["sampled"] = [*s["sampled"], history.short(hawb)][-SAMPLED:]
    else:
        outcome = m["outcome"] or ""
        kind = "sampled" if history.short(hawb) in s["sampled"] else "targeted"
        s[f"{kind}_exams"] += 1
        s[f"{kind}_violative"] += int(outcome in FINDINGS)
        s["outcomes"] = {**s["outcomes"], outcome: s["outcomes"].get(outcome, 0) + 1}
    return s


def card_of(code: str, state: Mapping[str, Any] | None, thresholds: Thresholds) -> Scorecard:
    """A filer's current scorecard from its live state (no evidence: that stays offline)."""
    s = _filer(state)
    card = Scorecard(code, outcomes=dict(s["outcomes"]))
    for k in _COUNTERS:
        setattr(card, k, int(s[k]))
    card.status, card.why = status(card, thresholds)
    return card


def _exams(card: Mapping[str, Any]) -> tuple[int, int]:
    """(examined, violative) of a published scorecard: targeted and sampled exams."""
    return (
        int(card.get("targeted_exams", 0)) + int(card.get("sampled_exams", 0)),
        int(card.get("targeted_violative", 0)) + int(card.get("sampled_violative", 0)),
    )


class Board:
    """Every filer's current scorecard, as published, and the totals over all filers."""

    def __init__(self) -> None:
        self.cards: dict[str, Mapping[str, Any]] = {}
        self.examined = 0
        self.violative = 0

    def update(self, code: str, card: Mapping[str, Any]) -> None:
        old_n, old_k = _exams(self.cards.get(code, {}))
        new_n, new_k = _exams(card)
        self.examined += new_n - old_n
        self.violative += new_k - old_k
        self.cards[code] = card

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
