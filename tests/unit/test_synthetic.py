"""The synthetic generator: valid records, planted malformations, truth kept apart."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from models.records import RecordError, decode
from models.synthetic import GeneratorConfig, TrafficGenerator


@pytest.fixture(scope="module")
def traffic() -> tuple[list, list]:
    gen = TrafficGenerator(GeneratorConfig(seed=3, bad_fraction=0.04))
    events = list(gen.events(6000))
    return events, gen.labels()


def test_deterministic_per_seed() -> None:
    a = [e.value for e in TrafficGenerator(GeneratorConfig(seed=9)).events(300)]
    b = [e.value for e in TrafficGenerator(GeneratorConfig(seed=9)).events(300)]
    c = [e.value for e in TrafficGenerator(GeneratorConfig(seed=10)).events(300)]
    assert a == b
    assert a != c


def test_good_records_decode_and_bad_ones_fail_on_the_planted_field(traffic) -> None:
    events, _ = traffic
    bad = 0
    for ev in events:
        if ev.bad_reason is None:
            decode(ev.kind, ev.value)
        else:
            bad += 1
            with pytest.raises(RecordError) as info:
                decode(ev.kind, ev.value)
            assert info.value.field.split(".")[0].split("[")[0] == ev.bad_reason
    assert 0.025 < bad / len(events) < 0.055


def test_labels_never_inside_records(traffic) -> None:
    events, labels = traffic
    for ev in events[:2000]:
        for word in (b"fentanyl", b"counterfeit", b"undervaluation", b"label"):
            assert word not in ev.value
    assert len(labels) == 6000


def test_events_in_time_order_and_entries_mostly_after_manifests(traffic) -> None:
    events, _ = traffic
    times = [e.event_time for e in events]
    assert times == sorted(times)
    first: dict[str, str] = {}
    for e in events:
        first.setdefault(e.key, e.kind)
    kinds = Counter(first.values())
    assert kinds["manifest"] > 0.85 * len(first)
    per_bill = Counter(e.key for e in events)
    manifest_only = sum(1 for n in per_bill.values() if n == 1) / len(per_bill)
    assert 0.04 < manifest_only < 0.13


def test_base_rates_close_to_configuration() -> None:
    gen = TrafficGenerator(GeneratorConfig(seed=4))
    for _ in gen.parcels(30_000):
        pass
    labels = gen.labels()
    rates = {
        k: np.mean([getattr(x, k) for x in labels])
        for k in ("fentanyl", "counterfeit", "undervaluation")
    }
    assert 0.0008 < rates["fentanyl"] < 0.004
    assert 0.018 < rates["counterfeit"] < 0.045
    assert 0.03 < rates["undervaluation"] < 0.07


def test_shippers_heavy_tailed(traffic) -> None:
    import orjson

    events, _ = traffic
    names = Counter(
        orjson.loads(e.value)["shipper"]["name"]
        for e in events
        if e.bad_reason is None and e.kind == "manifest"
    )
    counts = sorted(names.values(), reverse=True)
    top = counts[: max(1, len(counts) // 100)]
    assert sum(top) > 0.10 * sum(counts)  # the top 1% of shippers carry a large share
    assert counts[-1] == 1  # and a long tail sends a single parcel


def test_entry_type_follows_the_suspension_dates() -> None:
    import orjson

    cfg = GeneratorConfig(seed=5, parcels_per_second=1 / 600.0)  # ~144 parcels a day
    for ev in TrafficGenerator(cfg).events(40_000):
        if ev.kind != "entry":
            continue
        e = orjson.loads(ev.value)
        day = ev.event_time.date()
        cn = e["shipper"]["country"] in ("CN", "HK")
        suspended = day >= (cfg.suspension_cn_hk if cn else cfg.suspension_all)
        assert (e["entry_type"] != "86") == suspended


def test_filers_differ_in_quality() -> None:
    """Sloppy filers file late, without the estimated arrival and malformed, and carry more
    violative parcels; clean and trusted ones are never late."""
    from datetime import date

    import orjson

    from models.synthetic import FILERS

    gen = TrafficGenerator(GeneratorConfig(seed=5, bad_fraction=0.01))
    events = list(gen.events(20_000))
    violative = {
        lab.hawb for lab in gen.labels() if lab.fentanyl or lab.counterfeit or lab.undervaluation
    }
    arrival = {
        e.key: orjson.loads(e.value)["arrival_date"]
        for e in events
        if e.kind == "manifest" and e.bad_reason is None
    }
    stats: dict[str, Counter] = {f.code: Counter() for f in FILERS}
    for e in events:
        if e.kind != "entry" or e.bad_reason not in (None, "lines"):
            continue
        rec = orjson.loads(e.value)
        s = stats[rec["filer_code"]]
        s["entries"] += 1
        s["invalid"] += e.bad_reason == "lines"
        s["no_eta"] += "estimated_arrival" not in rec
        day = date.fromisoformat(rec["event_time"][:10])
        eta = rec.get("estimated_arrival", "9999-12-31")
        s["late"] += day > date.fromisoformat(arrival.get(e.key, eta)) or day.isoformat() > eta
        s["violative"] += e.key in violative
    for f in FILERS:
        s = stats[f.code]
        assert s["entries"] > 200, f.code
        share = {k: s[k] / s["entries"] for k in ("late", "no_eta", "invalid", "violative")}
        if f.quality == "sloppy":
            assert share["late"] > 0.1 and share["no_eta"] > 0.02 and share["invalid"] > 0.01
            assert share["violative"] > 0.15
        else:
            assert share["late"] == share["no_eta"] == 0 and share["invalid"] < 0.012
            assert share["violative"] < 0.12
