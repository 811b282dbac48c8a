"""streams/patches/sensors.py: Faust's Prometheus sensors give the same metrics with each
labelled series looked up once per partition or stream instead of once per event."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP
from prometheus_client import CollectorRegistry

from streams.patches.sensors import Monitor

TPS = [TP("parcels.manifest", 0), TP("parcels.manifest", 1), TP("parcels.entries", 0)]


class Owner:
    """A stream's task (the sensors key a weak mapping by it)."""


class Stream:
    """What the sensors read of a stream."""

    def __init__(self, label: str) -> None:
        self.shortlabel = f"Stream: {label}"
        self.task_owner = Owner()

    def __str__(self) -> str:
        return self.shortlabel


def feed(monitor: PrometheusMonitor, streams: list[Stream], events: int) -> None:
    for i in range(events):
        tp = TPS[i % len(TPS)]
        monitor.on_message_in(tp, i, SimpleNamespace(time_in=None))  # type: ignore[arg-type]
        monitor.on_stream_event_in(tp, i, streams[i % 2], None)  # type: ignore[arg-type]


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[Any, ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def monitor(kind: type[PrometheusMonitor]) -> tuple[PrometheusMonitor, CollectorRegistry]:
    registry = CollectorRegistry()
    return kind(metrics=FaustMetrics.create(registry, "faust")), registry


def test_the_same_metrics_as_faust_s_sensors() -> None:
    streams = [Stream("join-bills"), Stream("score-parcels")]
    ours, ours_registry = monitor(Monitor)
    faust_s, faust_registry = monitor(PrometheusMonitor)
    feed(ours, streams, 300)
    feed(faust_s, streams, 300)
    got, want = samples(ours_registry), samples(faust_registry)
    assert got == want
    assert got[("faust_messages_received_total", ())] == 300


def test_a_stream_s_label_is_built_once_not_per_event() -> None:
    ours, _ = monitor(Monitor)
    built = []
    label = ours._stream_label
    ours._stream_label = lambda stream: built.append(stream) or label(stream)  # type: ignore[method-assign]
    feed(ours, [Stream("join-bills"), Stream("score-parcels")], 1_000)
    assert len(built) == 2, f"the stream label was built {len(built)} times for 1,000 events"
