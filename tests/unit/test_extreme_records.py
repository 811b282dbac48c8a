"""Records the decoder accepts, with extreme but legal values, through every stage.

Issue 15: records that passed validation still stopped or wiped the worker. Here hypothesis
builds valid manifests, entries and dispositions with values at the edges of what the
schemas allow (times from 2000 to the future tolerance with any offset, amounts from 0 to
the maximum, Unicode text at its length limits, HS codes that exist or do not, currencies
with no known rate, lower-case HAWBs, record keys that differ from the HAWB) and runs them
through join, both histories, the real scorer, the real rules and the hold cap, with no
failure isolation (`dead=None`): nothing may raise, and every record ends in a decision or
a dead letter.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import records
from models.outputs import Source
from models.pipeline import (
    Incoming,
    consignee_batch,
    join_batch,
    record_decisions,
    score_batch,
    shipper_batch,
)
from models.records import entry_check_digit, mawb_check_digit
from models.registry import load
from models.rules import HoldCap, RulesFile
from models.scoring import Scorer
from streams.settings import ROOT, Settings

NOW = time.time()
AHEAD = Settings().max_event_ahead_s

text_chars = st.characters(blacklist_categories=("Cs", "Cc"))  # any Unicode but surrogates


def text(max_len: int) -> st.SearchStrategy[str]:
    """Short Unicode text, or text at the length limit (fixed, so failures shrink fast)."""
    return st.one_of(
        st.text(text_chars, min_size=1, max_size=8).filter(str.strip),
        st.sampled_from(["x" * max_len, "é" * max_len, ("🎁" * max_len)[:max_len]]),
        st.sampled_from(["  x  ", "\uff10\uff11\uff12", "x\u200by"]),  # spaces, digits, ZWSP
        st.sampled_from(["gift", "daily necessities", "herbal candy", "Nike", "🎁 gift 🎁"]),
    )


@st.composite
def instant(draw: st.DrawFn) -> str:
    earliest = records.EARLIEST_EVENT_TIME.timestamp()
    t = draw(st.floats(min_value=earliest, max_value=NOW + AHEAD - 60))
    offset = draw(st.integers(min_value=-14 * 60, max_value=14 * 60))
    tz = timezone(timedelta(minutes=offset))
    s = datetime.fromtimestamp(t, UTC).astimezone(tz).isoformat()
    return s.replace("+00:00", "Z") if draw(st.booleans()) else s


digits = st.text("0123456789", min_size=1, max_size=1)


@st.composite
def mawb(draw: st.DrawFn) -> str:
    prefix = "".join(draw(st.lists(digits, min_size=3, max_size=3)))
    serial = "".join(draw(st.lists(digits, min_size=7, max_size=7)))
    return prefix + serial + str(mawb_check_digit(serial))


hawb = st.from_regex(r"[A-Za-z0-9]{1,12}", fullmatch=True)
country = st.sampled_from(["CN", "HK", "US", "DE", "ZZ", "XK", "VN"])
amount = st.one_of(
    st.sampled_from([0.0, 0.01, 799.99, 800.0, records.MAX_VALUE_USD]),
    st.floats(min_value=0.0, max_value=records.MAX_VALUE_USD),
)
weight = st.one_of(
    st.sampled_from([1e-9, 0.001, records.MAX_WEIGHT_KG]),
    st.floats(min_value=1e-9, max_value=records.MAX_WEIGHT_KG),
)
# 4-10 digit codes: real headings, chapters that do not exist (00, 77, 98), anything
hs_digits = st.one_of(
    st.sampled_from(["6404", "847989", "2933399100", "0000", "7700000000", "9999999999"]),
    st.from_regex(r"\d{4}(\d{2}(\d{2}(\d{2})?)?)?", fullmatch=True),
)


def party(zip_: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    fields: dict[str, Any] = {
        "name": text(200),
        "address": text(300),
        "city": text(100),
        "country": country,
    }
    if zip_:
        fields |= {"state": text(50), "zip": text(20)}
    return st.fixed_dictionaries(fields)


def manifest(h: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "schema_version": st.just(1),
            "event_time": instant(),
            "hawb": st.just(h),
            "mawb": mawb(),
            "carrier": text(100),
            "flight": text(10),
            "origin_airport": st.from_regex(r"[A-Z]{3}", fullmatch=True),
            "arrival_port": st.from_regex(r"\d{4}", fullmatch=True),
            "arrival_date": st.dates().map(lambda d: d.isoformat()),
            "shipper": party(),
            "consignee": party(zip_=True),
            "description": text(records.MAX_TEXT),
            "pieces": st.integers(min_value=1, max_value=records.MAX_PIECES),
            "weight_kg": weight,
            "declared_value": amount,
            "currency": st.sampled_from(["USD", "CNY", "EUR", "XXX", "ZWL", "BTC"]),
        },
        optional={"hts": hs_digits},
    )


@st.composite
def entry(draw: st.DrawFn, h: str) -> dict[str, Any]:
    filer = draw(st.from_regex(r"[A-Z0-9]{3}", fullmatch=True))
    serial = "".join(draw(st.lists(digits, min_size=7, max_size=7)))
    line = st.fixed_dictionaries(
        {
            "hts": st.from_regex(r"\d{10}", fullmatch=True),
            "description": text(records.MAX_TEXT),
            "country_of_origin": country,
            "quantity": st.integers(min_value=1, max_value=1_000_000),
            "value_usd": amount,
        }
    )
    return {
        "schema_version": 1,
        "event_time": draw(instant()),
        "entry_number": filer + serial + str(entry_check_digit(filer, serial)),
        "entry_type": draw(st.sampled_from(sorted(records.ENTRY_TYPES))),
        "filer_code": filer,
        "hawb": h,
        "mawb": draw(mawb()),
        "port_of_entry": draw(st.from_regex(r"\d{4}", fullmatch=True)),
        "estimated_arrival": draw(st.dates()).isoformat(),
        "shipper": draw(party()),
        "consignee": draw(party(zip_=True)),
        "lines": draw(st.lists(line, min_size=1, max_size=4)),
    }


@st.composite
def traffic(draw: st.DrawFn) -> list[tuple[str, bytes, bytes]]:
    """(kind, key, value) for a few bills: manifest only, entry only, or both; sometimes a
    disposition, a duplicate, a key that is not the record's HAWB."""
    out = []
    for h in draw(st.lists(hawb, min_size=1, max_size=5, unique_by=str.upper)):
        sides = draw(st.sampled_from([("manifest",), ("entry",), ("manifest", "entry")]))
        for kind in sides:
            rec = draw(manifest(h)) if kind == "manifest" else draw(entry(h))
            key = draw(st.sampled_from([h.upper().encode()] * 4 + [h.encode(), b"another"]))
            out.append((kind, key, orjson.dumps(rec)))
            if draw(st.booleans()):
                out.append((kind, key, orjson.dumps(rec)))  # a duplicate record
        if draw(st.booleans()):
            disp = {
                "schema_version": 1,
                "event_time": draw(instant()),
                "hawb": h,
                "outcome": draw(st.sampled_from(sorted(records.OUTCOMES))),
                "examined_at": draw(instant()),
                "analyst": draw(text(100)),
            }
            out.append(("disposition", h.encode(), orjson.dumps(disp)))
    return out


@pytest.fixture(scope="module")
def scorer(model_dir: Path) -> Scorer:
    s = Scorer(load(model_dir))
    # every parcel flagged, so reasons and holds are built for all of them
    s.thresholds = {c: {"hold": 0.5, "review": 1e-12} for c in s.thresholds}
    return s


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=traffic())
def test_valid_extreme_records_never_raise_and_always_end_somewhere(batch, scorer) -> None:
    rules = RulesFile(ROOT / "deploy" / "rules.toml").rules
    bills: dict = {}
    consignees: dict = {}
    shippers: dict = {}
    incoming = [
        Incoming(kind, Source(f"parcels.{kind}", 0, offset, key), raw)
        for offset, (kind, key, raw) in enumerate(batch)
    ]
    res = join_batch(incoming, bills, records.MAX_RECORD_BYTES, latest=NOW + AHEAD)
    msgs = consignee_batch([m for _, m in res.forward], consignees)
    parcels = shipper_batch([m for _, m in msgs], shippers)
    scored = score_batch(parcels, scorer, b"k", rules, HoldCap(2))
    record_decisions(parcels, scored.flagged, scorer.version, shippers)

    decided = {d["source"]["offset"] for d in scored.decisions}
    dead = {item.source.offset for item, _err in res.dead}
    dispositions = {m["source"]["offset"] for _, m in res.forward if m["kind"] == "outcome"}
    assert res.replays == 0  # every record has its own offset: none is a replay
    assert decided | dead | dispositions == set(range(len(incoming)))
    assert not decided & dead
    for d in scored.decisions:
        assert all(0.0 <= x <= 1.0 for x in d["scores"].values())
    for h in scored.holds:
        assert h["reasons"] and all(isinstance(r, str) and r for r in h["reasons"])
        records.validate("hold", orjson.loads(records.encode(h)))  # what analysts receive
