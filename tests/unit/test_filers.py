"""Filer scorecards from the topics' records: figures, status and the entries behind them."""

from __future__ import annotations

import base64
import copy

import orjson
import pytest

from models.filers import Thresholds, scorecards
from models.records import entry_check_digit
from models.rules import RulesError, parse
from tests.samples import ENTRY

TOPIC = "parcels.entries"


def _entry(filer: str, n: int) -> dict:
    e = copy.deepcopy(ENTRY)
    serial = f"{n:07d}"
    e.update(
        hawb=f"{filer}H{n}",
        filer_code=filer,
        entry_number=filer + serial + str(entry_check_digit(filer, serial)),
    )
    return e


def _cards():
    entries = [_entry("9XK", n) for n in range(40)] + [_entry("AB1", n) for n in range(40)]
    decisions = [
        {"hawb": e["hawb"], "source": {"topic": TOPIC},
         "rules": ["late_t86"] if n < 8 and e["filer_code"] == "9XK" else [],
         "action": "sample" if n % 2 else None, "sample_rate": 0.5 if n % 2 else None}
        for n, e in enumerate(entries)
    ]  # fmt: skip
    broken = {**_entry("9XK", 99), "lines": [{"hts": "640"}]}
    dead = [
        {"source": {"topic": TOPIC}, "field": "lines[0].hts", "reason": "'640' is not an HTS",
         "original_b64": base64.b64encode(orjson.dumps(broken)).decode(),
         "dead_lettered_at": "2025-03-01T12:00:00Z"},
        {"source": {"topic": TOPIC}, "original_b64": base64.b64encode(b"\\xff{").decode()},
    ]  # fmt: skip
    outcomes = [
        {"hawb": e["hawb"], "outcome": "seized_ipr" if e["filer_code"] == "9XK" and n % 4 == 1
         else "released"}
        for n, e in enumerate(entries) if n % 2 or n % 10 == 0
    ]  # fmt: skip
    return scorecards(entries, decisions, dead, outcomes, Thresholds(), TOPIC)


def test_a_sloppy_filers_scorecard_cites_its_entries() -> None:
    cards = _cards()
    bad, good = cards["9XK"], cards["AB1"]
    assert (bad.entries, bad.late, bad.invalid) == (40, 8, 1)
    assert (bad.sampled_exams, bad.sampled_violative) == (20, 10)
    assert bad.targeted_exams == 4  # examined, not sampled
    shares = bad.shares()
    assert shares["sampled_violation_rate"] == 0.5
    assert 0.29 < shares["sampled_low"] < 0.5 < shares["sampled_high"] < 0.71
    assert bad.status == "at risk" and any("late filings 20.0%" in w for w in bad.why)
    found = {row["found"] for row in bad.evidence}
    assert "late_t86" in found and "sampled exam: seized_ipr" in found
    assert any(f.startswith("invalid: lines[0].hts") for f in found)
    assert all(row["entry_number"].startswith("9XK") for row in bad.evidence)
    assert good.status == "ok" and good.sampled_violative == 0 and good.late == 0
    assert orjson.dumps(bad.as_dict(evidence=True))  # what --json prints


def test_filer_thresholds_come_from_the_rules_file() -> None:
    rules = parse("[filers]\nlate_watch = 0.5\n")
    assert rules.filers.late_watch == 0.5 and rules.filers.late_at_risk == 0.10
    with pytest.raises(RulesError, match="unknown keys"):
        parse("[filers]\nlate = 0.5\n")
    with pytest.raises(RulesError, match="between 0 and 1"):
        parse("[filers]\nlate_watch = 5\n")


def test_a_batch_is_counted_per_filer_once_per_entry() -> None:
    from models.filers import counted, decided, named_entry

    entry = _entry("9XK", 1)
    views = [{"hawb": "H", "manifest": None, "entry": entry}] * 2 + [
        {"hawb": "M", "manifest": {}, "entry": None}
    ]
    decisions = [
        {"source": {"topic": TOPIC}, "action": "sample", "rules": ["late_t86", "watch"]},
        {"source": {"topic": "parcels.manifest"}, "action": "hold", "rules": []},  # a rescore
        {"source": {"topic": "parcels.manifest"}, "action": None, "rules": []},
    ]
    assert counted(decided(views, decisions, TOPIC)) == [
        ("9XK", "entries"),
        ("9XK", "sample"),
        ("9XK", "late_t86"),
    ]
    assert named_entry(orjson.dumps(entry)[:-40]) == ("9XK", entry["entry_number"])
    assert named_entry(b"not json") is None


# --- the live state: one owner per filer code, a board on every worker -------------------


def _decided(filer: str, hawb: str, action: str | None = None, late: bool = False):
    from models.filers import filer_message

    rules = ["late_t86"] if late else []
    return filer_message(filer, "decided", f"decided:{hawb}", hawb, action, rules)


def _exam(filer: str, hawb: str, outcome: str):
    from models.filers import filer_message

    return filer_message(filer, "exam", f"{outcome}:{hawb}", hawb, outcome=outcome)


def test_the_owner_folds_a_filers_events_into_the_figures_of_its_offline_scorecard() -> None:
    """The live scorecard counts what `scorecards` counts from the topics: entries, late
    filings, holds, invalid entries, exams targeted and sampled, outcomes by name."""
    from models.filers import filer_message
    from models.pipeline import filer_batch

    msgs = [
        _decided("9XK", "H1", "hold", late=True),
        _decided("9XK", "H2", "sample"),
        _decided("9XK", "H3"),
        filer_message("9XK", "invalid", "invalid:parcels.entries:0:7"),
        _exam("9XK", "H1", "seized_ipr"),  # held: a targeted exam
        _exam("9XK", "H2", "undervalued"),  # sampled
        _decided("AB1", "H4"),
    ]
    table: dict = {}
    cards, failures = filer_batch(msgs, list(range(len(msgs))), table, Thresholds())
    assert failures == 0
    bad = {c.filer: c for c in cards}["9XK"]
    assert (bad.entries, bad.late, bad.holds, bad.invalid) == (3, 1, 1, 1)
    assert (bad.targeted_exams, bad.targeted_violative) == (1, 1)
    assert (bad.sampled_exams, bad.sampled_violative) == (1, 1)
    assert bad.outcomes == {"seized_ipr": 1, "undervalued": 1}
    assert bad.status == "at risk"  # 1 of 3 entries late
    assert "late filings 33.3% >= 10.0%" in bad.why
    assert bad.as_dict()["sampled_violation_rate"] == 1.0
    assert {c.filer for c in cards} == {"9XK", "AB1"}


def test_a_replay_is_not_counted_twice() -> None:
    """The owner's own input replayed after a crash (offsets it already applied) and an
    event sent again upstream (a new offset, the same event) are both skipped."""
    from models.pipeline import filer_batch

    table: dict = {}
    first = [_decided("9XK", "H1"), _exam("9XK", "H1", "released")]
    filer_batch(first, [10, 10], table, Thresholds())  # one envelope: one offset
    before = copy.deepcopy(table)
    cards, _ = filer_batch(first, [10, 10], table, Thresholds())  # the owner replays
    assert cards == [] and table == before
    cards, _ = filer_batch(first, [11, 11], table, Thresholds())  # sent again upstream
    assert cards == [] and table == before
    (card,), _ = filer_batch([_decided("9XK", "H2")], [12], table, Thresholds())
    assert (card.entries, card.targeted_exams) == (2, 1)


def test_an_event_that_raises_is_skipped_and_the_rest_counted() -> None:
    from models.pipeline import filer_batch

    broken = {**_decided("9XK", "H1"), "event": None}  # a bug, not a record: skipped
    cards, failures = filer_batch([broken, _decided("9XK", "H2")], [1, 2], {}, Thresholds())
    assert failures == 1
    assert [c.entries for c in cards] == [1]


def test_join_sends_the_filer_its_invalid_entries_and_its_exam_outcomes() -> None:
    from models.outputs import Source
    from models.pipeline import Incoming, join_batch

    def incoming(kind: str, rec: dict | bytes, offset: int) -> Incoming:
        raw = rec if isinstance(rec, bytes) else orjson.dumps(rec)
        key = rec["hawb"].encode() if isinstance(rec, dict) else b"HX1"
        return Incoming(kind, Source(f"parcels.{kind}", 0, offset, key), raw)

    entry = _entry("9XK", 1)
    broken = {**_entry("9XK", 2), "lines": [{"hts": "640"}]}
    outcome = {
        "schema_version": 1,
        "event_time": "2025-03-05T00:00:00Z",
        "hawb": entry["hawb"],
        "outcome": "seized_ipr",
        "examined_at": "2025-03-04T10:00:00Z",
        "analyst": "a",
    }
    bills: dict = {}
    res = join_batch(
        [incoming("entry", entry, 0), incoming("entry", broken, 1), incoming("entry", b"{", 2)],
        bills,
        1 << 20,
    )
    assert [(k, m["what"], m["event"]) for k, m in res.filers] == [
        (b"9XK", "invalid", "invalid:parcels.entry:0:1")
    ]
    res = join_batch([incoming("disposition", outcome, 3)], bills, 1 << 20)
    assert [(k, m["what"], m["hawb"], m["outcome"]) for k, m in res.filers] == [
        (b"9XK", "exam", entry["hawb"], "seized_ipr")
    ]


def test_the_board_smooths_a_filers_rate_toward_the_overall_one() -> None:
    """Few exams say little: a filer's rate is pulled toward the rate over all filers (a
    beta prior worth PRIOR_EXAMS exams); many exams speak for themselves."""
    from models.filers import PRIOR_EXAMS, Board

    board = Board()
    board.update("AB1", {"targeted_exams": 98, "targeted_violative": 8})
    board.update("9XK", {"targeted_exams": 2, "sampled_exams": 0, "targeted_violative": 2})
    overall = (10 + 1) / (100 + 2)
    few = board.history("9XK")
    assert (few["examined"], few["violative"]) == (2.0, 2.0)
    assert few["violation_rate"] == pytest.approx((2 + PRIOR_EXAMS * overall) / (2 + PRIOR_EXAMS))
    assert overall < few["violation_rate"] < 0.25  # 2 of 2 is no proof of 100%
    assert board.history("NEW")["violation_rate"] == pytest.approx(overall)
    board.update("9XK", {"targeted_exams": 400, "targeted_violative": 200})  # replaces
    assert (board.examined, board.violative) == (498, 208)
    assert board.history("9XK")["violation_rate"] > 0.45


def test_training_rows_carry_the_filers_record_without_the_parcels_own_outcome() -> None:
    """The data-set builder folds exam outcomes into filer history through the owner's
    function and a board, as the worker does: a parcel's row never counts its own exam,
    which arrives days later; the filer's next parcel does."""
    from datetime import UTC, datetime, timedelta

    from models.dataset import replay
    from models.synthetic import Event, Label

    start = datetime(2025, 3, 1, tzinfo=UTC)
    events, labels = [], {}
    for n, day in enumerate((0, 0, 30)):
        e = _entry("9XK", n)
        e["event_time"] = (start + timedelta(days=day, minutes=n)).isoformat()
        events.append(Event("entry", e["hawb"], orjson.dumps(e), start + timedelta(days=day)))
        labels[e["hawb"]] = Label(e["hawb"], e["event_time"], 0, int(n < 2), 0, 10.0, 10.0)
    rows = replay(events, labels, exam_rate_risky=1.0, exam_rate_clean=0.0)
    first, second, later = (r["filer_history"] for r in rows)
    assert first["examined"] == second["examined"] == 0.0  # their own exams are not in
    assert (later["examined"], later["violative"]) == (2.0, 2.0)
    assert later["violation_rate"] > first["violation_rate"]


# --- entries per week, evidence in the published scorecard, the board's entries_in ---------


def _dated(filer: str, n: int, day: str) -> dict:
    e = _entry(filer, n)
    e["event_time"] = f"{day}T10:00:00+00:00"
    return e


def test_the_owner_counts_entries_per_event_time_week_bounded() -> None:
    """Entries are counted in the week of their event time (weeks start on Monday, UTC);
    only the latest WEEKS weeks are kept, and the scorecard carries them."""
    from datetime import date, timedelta

    from models.filers import WEEKS, decided
    from models.pipeline import filer_batch
    from models.records import event_epoch
    from models.sampling import week

    monday = date(2025, 3, 3)
    days = [monday + timedelta(days=d) for d in (0, 6, 7, 8, 9)]  # 2 in one week, 3 in next
    entries = [_dated("9XK", n, d.isoformat()) for n, d in enumerate(days)]
    views = [{"hawb": e["hawb"], "entry": e} for e in entries]
    ds = [{"source": {"topic": TOPIC}, "action": None, "rules": []} for _ in entries]
    table: dict = {}
    (card,), _ = filer_batch(decided(views, ds, TOPIC), list(range(5)), table, Thresholds())
    w = week(event_epoch(entries[0]))
    assert card.weeks == {str(w): 2, str(w + 1): 3}
    assert card.as_dict()["weeks"] == card.weeks  # published with the scorecard
    later = [_dated("9XK", 100 + n, (monday + timedelta(weeks=n)).isoformat()) for n in range(12)]
    views = [{"hawb": e["hawb"], "entry": e} for e in later]
    ds = [{"source": {"topic": TOPIC}, "action": None, "rules": []} for _ in later]
    (card,), _ = filer_batch(decided(views, ds, TOPIC), list(range(5, 17)), table, Thresholds())
    assert len(card.weeks) == WEEKS
    assert max(map(int, card.weeks)) == w + 11 and min(map(int, card.weeks)) == w + 11 - WEEKS + 1


def test_the_published_scorecard_cites_the_latest_entries_behind_each_figure() -> None:
    """Late filings, invalid entries, sampled and targeted exams each keep their most
    recent EVIDENCE entries, with entry number, HAWB, date and what was found."""
    from models.filers import EVIDENCE, _decided, exam_message, invalid_message
    from models.pipeline import filer_batch

    entries = [_entry("9XK", n) for n in range(EVIDENCE + 5)]
    late = [
        _decided(e, e["hawb"], {"action": None, "rules": ["late_t86"], "sample_rate": 0.5})
        for e in entries
    ]
    broken = {**_entry("9XK", 999), "lines": [{"hts": "640"}]}
    invalid = invalid_message(orjson.dumps(broken), "invalid:t:0:1", "lines[0].hts: '640'")
    assert invalid is not None
    exams = [exam_message(e, e["hawb"], "seized_ipr") for e in entries]
    msgs = [*late, invalid, *exams]
    (card,), _ = filer_batch(msgs, list(range(len(msgs))), {}, Thresholds())
    published = orjson.loads(orjson.dumps(card.as_dict(evidence=True)))
    rows = published["evidence"]
    assert sum(r["found"] == "late_t86" for r in rows) == EVIDENCE  # bounded
    assert sum(r["found"] == "sampled exam: seized_ipr" for r in rows) == EVIDENCE
    last = entries[-1]
    assert {"entry_number": last["entry_number"], "hawb": last["hawb"],
            "date": last["event_time"][:10], "found": "late_t86"} in rows  # fmt: skip
    assert entries[0]["hawb"] not in {r["hawb"] for r in rows}  # the oldest are dropped
    (bad,) = [r for r in rows if r["found"].startswith("invalid")]
    found = "invalid: lines[0].hts: '640'"
    date = broken["event_time"][:10]
    assert bad == {
        "entry_number": broken["entry_number"],
        "hawb": None,
        "date": date,
        "found": found,
    }


def test_the_topics_scorecard_and_the_published_one_agree() -> None:
    """`filers` computes from the topics' records what the owner publishes from the same
    events (one code path): figures, weeks and evidence."""
    from models.filers import decided
    from models.outputs import Source
    from models.pipeline import Incoming, filer_batch, join_batch

    entries = [_entry("9XK", n) for n in range(6)]
    decisions = [
        {"hawb": e["hawb"], "source": {"topic": TOPIC}, "action": "sample" if n < 3 else None,
         "rules": ["late_t86"] if n == 4 else [], "sample_rate": 0.5 if n < 3 else None}
        for n, e in enumerate(entries)
    ]  # fmt: skip
    broken = {**_entry("9XK", 99), "lines": [{"hts": "640"}]}
    outcomes = [
        {"schema_version": 1, "event_time": "2025-03-05T00:00:00Z", "hawb": e["hawb"],
         "outcome": "seized_ipr" if n % 2 else "released", "examined_at": "2025-03-04T10:00:00Z",
         "analyst": "a"}
        for n, e in enumerate(entries)
    ]  # fmt: skip
    # the worker: join (entries, the broken one, exam outcomes) and the decided entries
    bills: dict = {}
    raws = [("entry", e) for e in [*entries, broken]] + [("disposition", o) for o in outcomes]
    batch = [
        Incoming(kind, Source(f"parcels.{kind}", 0, i, r["hawb"].encode()), orjson.dumps(r))
        for i, (kind, r) in enumerate(raws)
    ]
    views = [{"hawb": e["hawb"], "entry": e} for e in entries]
    live_msgs = decided(views, decisions, TOPIC)
    res = join_batch(batch[:7], bills, 1 << 20)
    live_msgs += [m for _k, m in res.filers]
    live_msgs += [m for _k, m in join_batch(batch[7:], bills, 1 << 20).filers]
    (live,), _ = filer_batch(live_msgs, list(range(len(live_msgs))), {}, Thresholds())
    dead = [
        {"source": {"topic": TOPIC, "partition": 0, "offset": 6}, "field": "lines[0].hts",
         "reason": str(d[1]).split(": ", 1)[1],
         "original_b64": base64.b64encode(d[0].raw or b"").decode()}
        for d in res.dead
    ]  # fmt: skip
    offline = scorecards(entries, decisions, dead, outcomes, Thresholds(), TOPIC)["9XK"]
    assert offline.as_dict(evidence=True) == live.as_dict(evidence=True)
    assert (offline.sampled_exams, offline.targeted_exams, offline.invalid) == (3, 3, 1)


def test_the_board_gives_every_filers_entries_of_a_week_and_never_takes_any_away() -> None:
    from models.filers import WEEKS, Board

    board = Board()
    assert board.entries_in(2800) == {} and board.version(2800) == 0  # nothing read yet
    board.update("BIG", {"weeks": {"2800": 900, "2801": 40}})
    board.update("TNY", {"weeks": {"2800": 3}})
    assert board.entries_in(2800) == {"BIG": 900, "TNY": 3}
    v = board.version(2800)
    board.update("BIG", {"weeks": {"2800": 100, "2801": 41}})  # published again with less
    assert board.entries_in(2800)["BIG"] == 900 and board.version(2800) == v
    assert board.entries_in(2801) == {"BIG": 41}
    board.update("TNY", {"weeks": {"2800": 4}})  # a late entry of that week
    assert board.entries_in(2800)["TNY"] == 4 and board.version(2800) > v
    board.update("BIG", {"weeks": {str(2801 + n): 1 for n in range(WEEKS + 2)}})
    assert 2800 not in board.weeks and len(board.weeks) == WEEKS  # bounded
