"""The feed of `make run` runs for days: its memory must not grow with what it generated
(issue 22.4: 1.7 GiB after 17 minutes, entries waiting 90 minutes and every label kept)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from models.synthetic import GeneratorConfig, TrafficGenerator
from streams.feed import MAX_WAITING_ENTRIES, lag_scale, traffic
from streams.settings import ROOT

# generate `count` parcels as the live feed does, printing RSS after `warmup` and at the end
MEASURE = """
import json, sys
from datetime import UTC, datetime
from models.synthetic import GeneratorConfig
from streams.feed import traffic

def rss_mib():
    return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20

count, warmup, pps = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
config = GeneratorConfig(seed=5, bad_fraction=0.01, start=datetime.now(UTC), parcels_per_second=pps)
parcels, at_warmup = 0, None
for ev in traffic(config, count, live=True):
    parcels += ev.kind == "manifest"
    if parcels == warmup and at_warmup is None:
        at_warmup = rss_mib()
print(json.dumps({"warm": at_warmup, "end": rss_mib(), "parcels": parcels}))
"""


def rss_while_generating(count: int, warmup: int, pps: float) -> dict[str, float]:
    """RSS (MiB) of a fresh process after `warmup` parcels and after all `count`."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(count), str(warmup), str(pps)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"feed RSS: {done.stdout.strip()}")  # the figures, with -s
    return json.loads(done.stdout)


def test_feed_memory_does_not_grow_with_the_parcels_generated() -> None:
    # 10 parcels/s of event time: the live feed's entries wait at most 4 min (2,400 parcels),
    # so after 10k parcels nothing more should be held; before the fix every entry waited
    # 90 min (all 30k of them) and every label was kept: about +100 MiB here
    rss = rss_while_generating(30_000, 10_000, 10.0)
    assert rss["parcels"] >= 0.9 * 30_000  # malformed manifests do not count
    assert rss["end"] - rss["warm"] < 16, rss


@pytest.mark.slow
def test_feed_memory_after_a_million_parcels_is_bounded() -> None:
    # the demo's 300 parcels/s; 1M parcels take about 6 minutes on 2 cores
    rss = rss_while_generating(1_000_000, 100_000, 300.0)
    assert rss["end"] - rss["warm"] < 32, rss
    assert rss["end"] < 400, rss  # measured 143 MiB


def test_a_live_feed_keeps_what_waits_bounded_at_any_rate() -> None:
    demo = GeneratorConfig(parcels_per_second=300.0)
    assert lag_scale(demo, live=True) == pytest.approx(1 / 180)  # median 30 s, at most 4 min
    fast = GeneratorConfig(parcels_per_second=50_000.0)
    waiting = fast.parcels_per_second * 12 * 3600 * lag_scale(fast, live=False)
    assert waiting <= MAX_WAITING_ENTRIES * 1.0001
    # a data set's spacing (0.05 parcels/s) needs no change: its entries keep real lags
    assert lag_scale(GeneratorConfig(), live=False) == 1.0


def test_live_entries_follow_their_manifests_within_minutes() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    config = GeneratorConfig(seed=2, start=start, parcels_per_second=300.0)
    manifests: dict[str, datetime] = {}
    lags = []
    for ev in traffic(config, 5_000, live=True):
        if ev.kind == "manifest":
            manifests[ev.key] = ev.event_time
        elif ev.key in manifests:
            lags.append((ev.event_time - manifests[ev.key]).total_seconds())
    assert len(lags) > 3_000
    assert max(lags) <= timedelta(minutes=4).total_seconds()
    assert 15 < sorted(lags)[len(lags) // 2] < 60  # median about 30 s


def test_labels_are_streamed_not_kept_and_a_data_set_is_unchanged() -> None:
    config = GeneratorConfig(seed=8, n_shippers=2_000)
    kept = TrafficGenerator(config)
    expected_events = [e.value for e in kept.events(2_000)]
    streamed: list = []
    events = [e.value for e in traffic(config, 2_000, live=False, label_sink=streamed.append)]
    assert events == expected_events  # same records as before for a data set's spacing
    assert streamed == kept.labels()
    unkept = TrafficGenerator(config, keep_labels=False)
    assert len(list(unkept.events(100))) > 100
    assert unkept._labels == []
    with pytest.raises(ValueError, match="keeps no labels"):
        unkept.labels()


def test_a_nonsense_lag_scale_is_refused() -> None:
    with pytest.raises(ValueError, match="entry_lag_scale"):
        TrafficGenerator(GeneratorConfig(entry_lag_scale=0.0))
