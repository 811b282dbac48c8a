"""Lag and table-size gauges: the arithmetic, and partitions that move away."""

from __future__ import annotations

from faust.types import TP
from prometheus_client import REGISTRY

from streams.monitoring import Gauges, lag, owned

A0, A1, B0 = TP("in", 0), TP("in", 1), TP("app-bills-changelog", 0)


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_lag_is_end_minus_committed_for_owned_stream_partitions() -> None:
    got = lag([A0, A1, B0], {A0: 100, A1: 7, B0: 50}, {A0: 60, A1: None})
    assert got == {A0: 40, A1: 7}  # never committed: all of it; changelogs skipped


def test_unknown_end_gives_no_figure_and_lag_is_never_negative() -> None:
    assert lag([A0], {}, {A0: 5}) == {}
    assert lag([A0], {A0: 5}, {A0: 9}) == {A0: 0}


def test_gauges_follow_the_assignment() -> None:
    g = Gauges()
    g.update({A0: 40, A1: 7}, {"bills": 12}, owned([A0, A1, B0]))
    assert sample("parcel_risk_assigned_partitions", topic="in") == 2
    assert sample("parcel_risk_consumer_lag_records", topic="in", partition="1") == 7
    assert sample("parcel_risk_table_keys", table="bills") == 12
    g.update({A0: 3}, {"bills": 13}, owned([A0]))  # partition 1 moved to another worker
    assert sample("parcel_risk_assigned_partitions", topic="in") == 1
    assert sample("parcel_risk_consumer_lag_records", topic="in", partition="0") == 3
    assert sample("parcel_risk_consumer_lag_records", topic="in", partition="1") is None
