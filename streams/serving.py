"""Which model a worker serves, and live promotion through models.control.

Every worker reads the whole compacted models.control topic with its own group-less
consumer (a consumer group would give the one partition to one worker only). A promotion
names a version and its checksum; the worker loads and verifies the artifact in a thread,
off the event loop, then swaps one reference: a batch uses the scorer it started with, the
next batch the new one. A broken artifact is refused, counted, and the old model serves on.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from threadpoolctl import threadpool_limits

from models.registry import Artifact, ArtifactError, load
from models.scoring import Scorer
from streams import metrics
from streams.security import connection
from streams.settings import Settings

log = logging.getLogger(__name__)
CONTROL_KEY = b"model"


def limit_model_threads(n: int) -> None:
    """Cap the OpenMP threads of model calls for the rest of the process.

    scikit-learn's gradient boosting predicts with one OpenMP thread per core; on a
    worker's batches of tens to hundreds of parcels the threads spend more time waking and
    spinning than predicting. Measured (benchmarks/RESULTS.md): one thread gives the same
    throughput on a backlog with less CPU, and 30-40% less CPU at a steady 300-1,000
    parcels/s. Call after the model is loaded, so that its OpenMP runtime is there to cap.
    """
    threadpool_limits(limits=n, user_api="openmp")


class ModelServer:
    """Holds the current scorer; `scorer` is swapped atomically on promotion."""

    def __init__(self, s: Settings, artifact: Artifact, control_offset: int = 0) -> None:
        self.s = s
        # where to follow models.control from: just after what start-up already read
        self.control_offset = control_offset
        self.scorer = Scorer(artifact, s.threshold_overrides(artifact.thresholds))
        metrics.show_model(artifact.version, artifact.meta)
        metrics.MODEL_LOADS.labels("success").inc()

    def versions(self) -> list[str]:
        """The model versions this worker scores with."""
        return [self.scorer.version]

    async def switch(self, promotion: dict[str, Any]) -> bool:
        """Load the promoted version off the loop; swap only if it verifies."""
        version = promotion.get("version")
        if not isinstance(version, str) or not version:
            log.error("ignoring promotion without a version: %r", promotion)
            metrics.MODEL_LOADS.labels("failure").inc()
            return False
        if version == self.scorer.version:
            return True
        try:
            artifact = await asyncio.get_running_loop().run_in_executor(
                None, load, self.s.model_dir, version
            )
            expected = promotion.get("sha256")
            if expected and expected != artifact.meta["model_sha256"]:
                raise ArtifactError(f"model {version}: checksum differs from the promotion's")
        except ArtifactError as exc:
            log.error("refusing promoted model, still serving %s: %s", self.scorer.version, exc)
            metrics.MODEL_LOADS.labels("failure").inc()
            return False
        self.scorer = Scorer(artifact, self.s.threshold_overrides(artifact.thresholds))
        metrics.show_model(version, artifact.meta)
        metrics.MODEL_LOADS.labels("success").inc()
        log.warning("now serving model %s", version)
        return True


def _control_consumer(s: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(**connection(s), group_id=None, enable_auto_commit=False)


async def promoted(s: Settings, timeout_s: float = 10.0) -> tuple[dict[str, Any] | None, int]:
    """The latest promotion on models.control (None if none) and the offset read up to."""
    consumer = _control_consumer(s)
    await consumer.start()
    try:
        tp = TopicPartition(s.topic("control_topic"), 0)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        if end == 0:
            return None, 0
        # an explicit seek: seek_to_beginning right after end_offsets lands on the end
        consumer.seek(tp, (await consumer.beginning_offsets([tp]))[tp])
        latest = None
        deadline = asyncio.get_running_loop().time() + timeout_s
        while await consumer.position(tp) < end:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("reading models.control timed out")
            for msgs in (await consumer.getmany(tp, timeout_ms=500)).values():
                for m in msgs:
                    if m.key == CONTROL_KEY and m.value:
                        try:
                            latest = orjson.loads(m.value)
                        except orjson.JSONDecodeError:
                            log.error("ignoring malformed promotion at offset %d", m.offset)
        return latest, end
    finally:
        await consumer.stop()


async def follow(s: Settings, server: ModelServer) -> None:
    """Apply every promotion published after start-up, for as long as the worker runs."""
    consumer = _control_consumer(s)
    await consumer.start()
    try:
        tp = TopicPartition(s.topic("control_topic"), 0)
        consumer.assign([tp])
        consumer.seek(tp, server.control_offset)
        while True:
            for msgs in (await consumer.getmany(tp, timeout_ms=1000)).values():
                for m in msgs:
                    server.control_offset = m.offset + 1
                    if m.key != CONTROL_KEY or not m.value:
                        continue
                    try:
                        await server.switch(orjson.loads(m.value))
                    except orjson.JSONDecodeError:
                        log.error("ignoring malformed promotion record at offset %d", m.offset)
                        metrics.MODEL_LOADS.labels("failure").inc()
    finally:
        await consumer.stop()


async def promote(s: Settings, version: str, by: str) -> dict[str, Any]:
    """Verify an artifact loads here, then publish it as the promoted model."""
    artifact = load(s.model_dir, version)
    record = {
        "version": artifact.version,
        "sha256": artifact.meta["model_sha256"],
        "promoted_at": datetime.now(UTC).isoformat(),
        "promoted_by": by,
    }
    producer = AIOKafkaProducer(**connection(s), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            s.topic("control_topic"), orjson.dumps(record), key=CONTROL_KEY
        )
    finally:
        await producer.stop()
    return record
