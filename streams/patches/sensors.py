"""Faust's Prometheus sensors, with the per-record counts published once a second.

faust-streaming 0.15's PrometheusMonitor updates Prometheus on every record: for each
message three counter and gauge updates and two labelled-series lookups, for each stream
event three more and a lookup whose label it builds with a regular expression, a gauge
per record for the partition's end offset, and decrements when they are done. Measured
with benchmarks/stream_floor.py, the worker's consumer spent 155 µs of CPU per event with
those sensors and 84 µs without them (issue 18).

Faust's base Monitor already counts all of this in plain Python (messages and events
received and active, per topic, per stream, each partition's read and end offset). Here
the per-record path is the base Monitor's alone, and a timer copies its counts into the
same Prometheus series every second: the same metrics, at most a second late, which a
Prometheus scrape (every 15 s) does not see. The event runtime histogram is still
observed per event: its buckets cannot be rebuilt from a count.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from faust.sensors.monitor import Monitor as BaseMonitor
from faust.sensors.prometheus import PrometheusMonitor
from faust.types import TP, EventT, StreamT
from mode import Service

from streams.patches import written_for

PUBLISH_EVERY_S = 1.0


class Monitor(PrometheusMonitor):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._published: Counter[Any] = Counter()  # what the series already count
        self._labels: dict[str, str] = {}  # Faust's key of a stream (its str) -> label

    # the per-record sensors: Faust's base Monitor only (it counts; publish() reports)
    on_message_in = BaseMonitor.on_message_in
    on_stream_event_in = BaseMonitor.on_stream_event_in
    on_message_out = BaseMonitor.on_message_out
    track_tp_end_offset = BaseMonitor.track_tp_end_offset

    def on_stream_event_out(
        self,
        tp: TP,
        offset: int,
        stream: StreamT,
        event: EventT,
        state: dict | None = None,
    ) -> None:
        """PrometheusMonitor.on_stream_event_out without the active-events gauge (published)."""
        BaseMonitor.on_stream_event_out(self, tp, offset, stream, event, state)
        if state is not None:
            self._metrics.events_runtime_latency.observe(self.secs_to_ms(self.events_runtime[-1]))

    @Service.timer(PUBLISH_EVERY_S)
    async def _publish_periodically(self) -> None:
        self.publish()

    def publish(self) -> None:
        """Bring the Prometheus series up to the base Monitor's counts."""
        m = self._metrics
        self._advance(m.messages_received, ("all", "messages"), self.messages_received_total)
        self._advance(m.total_events, ("all", "events"), self.events_total)
        m.active_messages.set(self.messages_active)
        m.total_active_events.set(self.events_active)
        for topic, n in self.messages_received_by_topic.items():
            self._advance(m.messages_received_per_topics.labels(topic=topic), ("topic", topic), n)
        for tp, offset in self.tp_read_offsets.items():
            m.messages_received_per_topics_partition.labels(
                topic=tp.topic, partition=tp.partition
            ).set(offset)
        for tp, offset in self.tp_end_offsets.items():
            m.topic_partition_end_offset.labels(topic=tp.topic, partition=tp.partition).set(offset)
        labels = self._labels
        for stream, key in list(self.stream_lookup.items()):
            if key not in labels:
                labels[key] = f"stream.{self._stream_label(stream)}.events"
        for key, n in self.events_by_stream.items():
            if key in labels:  # a stream gone before its first publish has no label left
                self._advance(
                    m.total_events_per_stream.labels(stream=labels[key]), ("stream", key), n
                )

    def _advance(self, counter: Any, key: Any, total: int) -> None:
        """Increment a Prometheus counter by what `total` grew since it was last published."""
        grown = total - self._published[key]
        if grown > 0:
            counter.inc(grown)
            self._published[key] = total


written_for("faust-streaming", "0.15.3")
