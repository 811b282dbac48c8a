"""streams/patches/sensors.py: Faust's Prometheus sensors give the same metrics when the
per-record counts are published once a second instead of on every record."""

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
    """Records in, through a stream; all but the last 5 done; each partition's end seen."""
    for i in range(events):
        tp = TPS[i % len(TPS)]
        message = SimpleNamespace(time_in=None)
        monitor.track_tp_end_offset(tp, i + 100)
        monitor.on_message_in(tp, i, message)  # type: ignore[arg-type]
        state = monitor.on_stream_event_in(tp, i, streams[i % 2], None)  # type: ignore[arg-type]
        if i < events - 5:
            monitor.on_stream_event_out(tp, i, streams[i % 2], None, state)  # type: ignore[arg-type]
            monitor.on_message_out(tp, i, message)  # type: ignore[arg-type]


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[Any, ...]], float]:
    """Every sample but creation times and the runtime histogram's (its values are times)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created") and "runtime" not in s.name
    }


def monitor(kind: type[PrometheusMonitor]) -> tuple[PrometheusMonitor, CollectorRegistry]:
    registry = CollectorRegistry()
    return kind(metrics=FaustMetrics.create(registry, "faust")), registry


def test_the_same_metrics_as_faust_s_sensors_once_published() -> None:
    streams = [Stream("join-bills"), Stream("score-parcels")]
    ours, ours_registry = monitor(Monitor)
    faust_s, faust_registry = monitor(PrometheusMonitor)
    feed(ours, streams, 300)
    feed(faust_s, streams, 300)
    want = samples(faust_registry)
    assert samples(ours_registry) != want, "counted per record after all"
    ours.publish()  # what the timer does every second
    assert samples(ours_registry) == want
    assert want[("faust_messages_received_total", ())] == 300
    assert want[("faust_active_messages", ())] == 5
    # published again after more records: counters grow by what was added, not twice
    feed(ours, streams, 30)
    feed(faust_s, streams, 30)
    ours.publish()
    ours.publish()
    assert samples(ours_registry) == samples(faust_registry)
    assert samples(ours_registry)[("faust_total_events_total", ())] == 330
    # the runtime histogram is still observed per event
    runtime = ("faust_events_runtime_ms_count", ())
    assert histogram(ours_registry)[runtime] == histogram(faust_registry)[runtime] == 320


def histogram(registry: CollectorRegistry) -> dict[tuple[str, tuple[Any, ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if "runtime" in s.name
    }


def test_a_stream_s_label_is_built_once_not_per_event() -> None:
    ours, _ = monitor(Monitor)
    built = []
    label = ours._stream_label
    ours._stream_label = lambda stream: built.append(stream) or label(stream)  # type: ignore[method-assign]
    streams = [Stream("join-bills"), Stream("score-parcels")]
    feed(ours, streams, 1_000)
    for _ in range(3):
        ours.publish()
    assert len(built) == 2, f"the stream label was built {len(built)} times for 1,000 events"
