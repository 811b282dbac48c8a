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
        {"hawb": e["hawb"], "rules": ["late_t86"] if n < 8 and e["filer_code"] == "9XK" else [],
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
    from models.filers import counted, named_entry

    entry = _entry("9XK", 1)
    views = [{"hawb": "H", "manifest": None, "entry": entry}] * 2 + [
        {"hawb": "M", "manifest": {}, "entry": None}
    ]
    decisions = [
        {"source": {"topic": TOPIC}, "action": "sample", "rules": ["late_t86", "watch"]},
        {"source": {"topic": "parcels.manifest"}, "action": "hold", "rules": []},  # a rescore
        {"source": {"topic": "parcels.manifest"}, "action": None, "rules": []},
    ]
    assert counted(views, decisions, TOPIC) == [
        ("9XK", "entries"),
        ("9XK", "sample"),
        ("9XK", "late_t86"),
    ]
    assert named_entry(orjson.dumps(entry)[:-40]) == ("9XK", entry["entry_number"])
    assert named_entry(b"not json") is None
