"""tests/leftovers.py matches what test and benchmark runs name, never the product's."""

from __future__ import annotations

from benchmarks.harness import own_run
from streams.settings import Settings
from streams.topics import all_topics
from tests.leftovers import is_leftover


def test_runs_names_are_leftovers_and_the_products_are_not() -> None:
    for kind, app in [
        ("t", "parcel-risk-test"),
        ("o", "parcel-risk-own"),
        ("r", "parcel-risk-run"),
        ("bl", "bench-latency"),
        ("bs", "bench-state"),
        ("bt", "bench-throughput"),
    ]:
        s = own_run(Settings(), kind, app)
        assert all(is_leftover(t) for t in all_topics(s)), s
        assert is_leftover(f"{s.app_id}-bills-changelog") and is_leftover(s.app_id)
        assert is_leftover(f"{s.app_id}-w2-__assignor-__leader")
    assert is_leftover("bl1a2b3c.parcels.decisions")  # older benchmarks: 6 hex digits
    assert is_leftover("bench-throughput-1a2b3c-naive")
    crash = "crash-crash1a2b3c4d.parcels.manifest"
    assert is_leftover(crash) and is_leftover(f"{crash}-__assignor-__leader")

    default = Settings()
    for name in [*all_topics(default), "parcel-risk-bills-changelog", "parcel-risk-by-shipper"]:
        assert not is_leftover(name), name
    assert not is_leftover("parcel-risk") and not is_leftover("__consumer_offsets")
    assert not is_leftover("tea.parcels.manifest")
