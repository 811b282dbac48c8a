"""Rules and policy: watch lists, de minimis eligibility, conditions, refusals, reloads."""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from models.features import FEATURES, References, build_features
from models.records import entry_check_digit, validate
from models.rules import (
    HoldCap,
    RulesError,
    RulesFile,
    _safe,
    column_condition,
    compile_condition,
    merge,
    parse,
)
from streams.settings import ROOT
from tests.samples import ENTRY, MANIFEST, POLICY_TOML

RULES = (
    POLICY_TOML
    + """
[[rule]]
name = "watch-joy"
action = "hold"
category = "counterfeit"
shippers = ["SHENZHEN JOY TRADING CO., LTD.|CN"]

[[rule]]
name = "presses"
action = "hold"
category = "fentanyl"
hs_prefix = ["8479.89"]

[[rule]]
name = "cheap-shoes"
action = "review"
category = "counterfeit"
when = "declared_value_usd < 30 and hs_chapter == 64 and origin in ('CN', 'HK')"
"""
)


def _view(manifest: dict | None = None, entry: dict | None = None) -> dict:
    m = validate("manifest", manifest or MANIFEST)
    e = validate("entry", entry) if entry else None
    return {"hawb": m["hawb"], "manifest": m, "entry": e}


def _eval(text: str, view: dict) -> list:
    return parse(text).evaluate(view, build_features([view], References())[0])


def test_default_rules_file_parses() -> None:
    rules = parse((ROOT / "deploy" / "rules.toml").read_text())
    assert {r.name for r in rules.rules} >= {"tablet-presses-and-parts", "fentanyl-precursors"}


def test_watch_listed_shipper_matches_whatever_the_spelling() -> None:
    names = [m.rule for m in _eval(RULES, _view())]
    assert "watch-joy" in names  # 'Shenzhen Joy Trading Co Ltd' in the record


def test_hs_watch_list_and_condition() -> None:
    m = {**MANIFEST, "hts": "847989", "shipper": {**MANIFEST["shipper"], "name": "Other Ltd"}}
    hits = {x.rule: x for x in _eval(RULES, _view(m))}
    assert hits["presses"].action == "hold"
    assert "8479" in hits["presses"].reason
    cheap = {
        x.rule
        for x in _eval(RULES, _view({**MANIFEST, "declared_value": 12.0, "shipper": m["shipper"]}))
    }
    assert "cheap-shoes" in cheap
    dear = {
        x.rule
        for x in _eval(RULES, _view({**MANIFEST, "declared_value": 120.0, "shipper": m["shipper"]}))
    }
    assert "cheap-shoes" not in dear


def _entry(day: str, origin: str, value: float = 24.5, entry_type: str = "86") -> dict:
    e = copy.deepcopy(ENTRY)
    e["event_time"] = f"{day}T10:00:00+00:00"
    e["entry_type"] = entry_type
    e["shipper"]["country"] = origin
    e["lines"][0]["value_usd"] = value
    e["entry_number"] = "AB10012345" + str(entry_check_digit("AB1", "0012345"))
    return e


def test_excluded_origin_after_effective_date_is_ineligible() -> None:
    after = _eval(RULES, _view(entry=_entry("2025-06-01", "CN")))
    assert [m.rule for m in after if m.rule == "de-minimis-ineligible"]
    assert "origin CN excluded since 2025-05-02" in next(
        m.reason for m in after if m.rule == "de-minimis-ineligible"
    )
    before = _eval(RULES, _view(entry=_entry("2025-04-01", "CN")))
    assert not [m for m in before if m.rule == "de-minimis-ineligible"]
    other = _eval(RULES, _view(entry=_entry("2025-06-01", "VN")))
    assert not [m for m in other if m.rule == "de-minimis-ineligible"]
    dutiable = _eval(RULES, _view(entry=_entry("2025-06-01", "CN", entry_type="11")))
    assert not [m for m in dutiable if m.rule == "de-minimis-ineligible"]
    over = _eval(RULES, _view(entry=_entry("2025-04-01", "VN", value=950.0)))
    assert "over $800" in next(m.reason for m in over if m.rule == "de-minimis-ineligible")


@pytest.mark.parametrize(
    ("bad", "line", "words"),
    [
        ('when = "declared_value_usd < 30 and colour == 1"', 25, "unknown field 'colour'"),
        ("when = \"__import__('os').system('true')\"", 25, "Call is not allowed"),
        ('when = "declared_value_usd <"', 25, "not a condition"),
    ],
)
def test_bad_conditions_refused_with_the_rule_line(bad: str, line: int, words: str) -> None:
    text = RULES.replace(
        "when = \"declared_value_usd < 30 and hs_chapter == 64 and origin in ('CN', 'HK')\"", bad
    )
    with pytest.raises(RulesError) as info:
        parse(text, "rules.toml")
    assert f"rules.toml:{line}:" in str(info.value)
    assert words in str(info.value)


def test_bad_action_and_bad_toml_name_their_line() -> None:
    with pytest.raises(RulesError, match=r"rules.toml:11: .*action must be hold or review"):
        parse(
            RULES.replace(
                'action = "hold"\ncategory = "counterfeit"',
                'action = "seize"\ncategory = "counterfeit"',
            ),
            "rules.toml",
        )
    with pytest.raises(RulesError, match="line 3"):
        parse("[policy]\nde_minimis_usd = 800\nthis is not toml\n", "rules.toml")


def test_rules_strengthen_but_never_weaken() -> None:
    from models.rules import Match

    actions, cats = merge(
        ["review", "hold", None],
        ["fentanyl", "counterfeit", None],
        [
            [Match("r", "hold", "undervaluation", "x")],
            [Match("r", "review", "fentanyl", "x")],
            [],
        ],
    )
    assert actions == ["hold", "hold", None]
    assert cats == ["undervaluation", "counterfeit", None]


def test_hold_cap_per_category_per_hour() -> None:
    cap = HoldCap(2)
    assert [cap.admit("fentanyl", 1) for _ in range(3)] == [True, True, False]
    assert cap.admit("counterfeit", 1) and cap.admit("fentanyl", 2)


def test_reload_takes_good_edits_and_keeps_old_rules_on_bad_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(RULES)
    rf = RulesFile(path)
    assert rf.refresh() is None
    path.write_text(RULES.replace('name = "presses"', 'name = "presses-v2"'))
    os.utime(path, (1e9, 1e9))
    assert rf.refresh() == "success"
    assert "presses-v2" in {r.name for r in rf.rules.rules}
    path.write_text(RULES + '\n[[rule]]\nname = "broken"\naction = "hold"\n')
    os.utime(path, (2e9, 2e9))
    with caplog.at_level(logging.WARNING, logger="models.rules"):
        assert rf.refresh() == "failure"
    assert "presses-v2" in {r.name for r in rf.rules.rules}
    assert "broken" in rf.last_error
    (logged,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "the old ones stay" in logged.getMessage() and "broken" in logged.getMessage()


SECTION_321 = POLICY_TOML.replace(
    "[[policy.excluded_origins]]",
    'late_filing_from = "2024-01-16"\nestimated_arrival_from = "2024-07-25"\n'
    "daily_aggregate_usd = 800\n[[policy.excluded_origins]]",
    1,
)


def _filed(day: str, eta: str | None, entry_type: str = "86") -> dict:
    e = _entry(day, "VN", entry_type=entry_type)
    if eta is None:
        del e["estimated_arrival"]
    else:
        e["estimated_arrival"] = eta
    return e


def test_a_type_86_filed_after_arrival_is_late() -> None:
    manifest = {**MANIFEST, "arrival_date": "2025-03-02"}
    on_time = _eval(SECTION_321, _view(manifest, _filed("2025-03-02", "2025-03-02")))
    assert "late_t86" not in {m.rule for m in on_time}  # upon arrival is in time
    late = _eval(SECTION_321, _view(manifest, _filed("2025-03-03", "2025-03-05")))
    (m,) = [m for m in late if m.rule == "late_t86"]
    assert "filed 2025-03-03, after manifest arrival 2025-03-02" in m.reason
    own = _eval(SECTION_321, _view(None, _filed("2025-03-03", "2025-03-01")) | {"manifest": None})
    assert "after its estimated arrival 2025-03-01" in next(
        m.reason for m in own if m.rule == "late_t86"
    )
    dutiable = _eval(SECTION_321, _view(manifest, _filed("2025-03-03", "2025-03-01", "11")))
    assert "late_t86" not in {m.rule for m in dutiable}
    before_the_rule = _eval(
        SECTION_321,
        _view({**manifest, "arrival_date": "2023-03-02"}, _filed("2023-03-03", "2023-03-02")),
    )
    assert "late_t86" not in {m.rule for m in before_the_rule}
    assert "late_t86" not in {
        m.rule for m in _eval(RULES, _view(manifest, _filed("2025-03-03", None)))
    }


def test_a_type_86_without_estimated_arrival_is_flagged_from_its_date() -> None:
    missing = _eval(SECTION_321, _view(entry=_filed("2025-03-01", None)))
    assert "without its estimated arrival" in next(
        m.reason for m in missing if m.rule == "t86_no_eta"
    )
    earlier = _eval(SECTION_321, _view(entry=_filed("2024-03-01", None)))
    assert "t86_no_eta" not in {m.rule for m in earlier}


def test_a_consignees_day_over_800_in_aggregate_is_flagged_with_the_total() -> None:
    view = _view(entry=_filed("2025-03-01", "2025-03-02"))
    view["entry"]["lines"][0]["value_usd"] = 300.0
    view["consignee_history"] = {"value_today": 450.0}
    under = _eval(SECTION_321, view)
    assert "de_minimis_aggregate" not in {m.rule for m in under}
    view["consignee_history"] = {"value_today": 600.0}
    (m,) = [m for m in _eval(SECTION_321, view) if m.rule == "de_minimis_aggregate"]
    assert "today $900.00 ($600.00 before this $300.00 parcel) over $800" in m.reason


def test_policy_keys_are_checked() -> None:
    with pytest.raises(RulesError, match="late_filing_form"):
        parse("[policy]\nlate_filing_form = '2024-01-16'\n")


def test_trusted_parties_are_checked() -> None:
    with pytest.raises(RulesError, match="names no filers"):
        parse('[[trusted]]\nname = "empty"\n')
    with pytest.raises(RulesError, match="never lowers"):
        parse("[trust]\nfactor = 0.5\n")
    rules = parse('[[trusted]]\nname = "c"\nfilers = ["ab1"]\nfrom = "2025-01-01"\n')
    assert rules.trust(_view(entry=_entry("2025-06-01", "VN"))) == "c"
    assert rules.trust(_view(entry=_entry("2024-06-01", "VN"))) is None
    assert rules.trust(_view()) is None  # no entry, no filer


@pytest.mark.parametrize(
    "condition",
    [
        "declared_value_usd < 30 and hs_chapter == 64",
        "desc_cover_phrase == 1 and consignee_business == 0",
        "not declared_value_usd >= 30 or weight_kg != 1.5",
        "0 < declared_value_usd <= 20 < weight_kg",
        "hs_chapter in (61, 62, 64) and not has_entry",
        "hs_chapter not in (61, -weight_kg)",
        "declared_value_usd",
        "-declared_value_usd < -10 and (weight_kg > 1) == 1",
    ],
)
def test_conditions_on_columns_decide_as_per_parcel(condition: str) -> None:
    """The batch path gives each row what the per-parcel path gives its facts, NaN included."""
    rng = np.random.default_rng(7)
    X = rng.choice([np.nan, 0.0, 1.0, 1.5, 12.0, 25.0, 61.0, 64.0], (400, len(FEATURES)))
    X = X.astype(np.float32)
    columns, row = column_condition(condition), compile_condition(condition)
    assert columns is not None
    expected = [_safe(row, dict(zip(FEATURES, x.tolist(), strict=True))) for x in X]
    assert columns(X).tolist() == expected


def test_conditions_on_text_fields_stay_per_parcel() -> None:
    assert column_condition("origin in ('CN', 'HK') and declared_value_usd < 30") is None
    assert column_condition("declared_value_usd < (1, 2)") is None  # a TypeError per parcel
    assert column_condition("declared_value_usd in (1, 2) < 3") is None
    huge = "declared_value_usd < 1" + "0" * 400  # beyond any float: compared exactly per parcel
    rule = 'name = "huge"\naction = "review"\ncategory = "counterfeit"\nwhen = "' + huge + '"'
    assert parse("[[rule]]\n" + rule).rules[0].when_columns is None
