"""Which model a worker serves, and live promotion through models.control.

Every worker reads the whole compacted models.control topic with its own group-less
consumer (a consumer group would give the one partition to one worker only). A promotion
names a version and its checksum; the worker loads and verifies the artifact in a thread,
off the event loop, then swaps one reference: a batch uses the scorer it started with, the
next batch the new one. A broken artifact is refused, counted, and the old model serves on.

The protocol, by record key (the topic is compacted, so the latest record per key stays):
- `model`: {"version", "sha256", "promoted_at", "promoted_by"}, the model that serves.
- `shadow` (since issue 21): the same fields for a candidate scored beside it on every
  decision, or {"version": null} when the shadow ends. Workers of earlier builds skip
  keys other than `model`, so they go on serving and simply score no shadow.
A promotion ends any shadow: promoting the shadow's version makes it serve (its artifact
is already loaded), and a candidate is compared with the model that serves, not an older one.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path
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
SHADOW_KEY = b"shadow"


def limit_model_threads(n: int) -> None:
    """Cap the OpenMP threads of model calls for the rest of the process.

    scikit-learn's gradient boosting predicts with one OpenMP thread per core; on a
    worker's batches of tens to hundreds of parcels the threads spend more time waking and
    spinning than predicting. Measured (benchmarks/RESULTS.md): one thread gives the same
    throughput on a backlog with less CPU, and 30-40% less CPU at a steady 300-1,000
    parcels/s. Call after the model is loaded, so that its OpenMP runtime is there to cap.
    """
    threadpool_limits(limits=n, user_api="openmp")


def verified(model_dir: Path, record: dict[str, Any]) -> Artifact:
    """The artifact a control record names, checked against the record's checksum."""
    version = record.get("version")
    if not isinstance(version, str) or not version:
        raise ArtifactError(f"control record without a version: {record!r}")
    artifact = load(model_dir, version)
    expected = record.get("sha256")
    if expected and expected != artifact.meta["model_sha256"]:
        raise ArtifactError(f"model {version}: checksum differs from the promotion's")
    return artifact


class ModelServer:
    """Holds the current scorer and any shadow; each is swapped atomically."""

    def __init__(
        self,
        s: Settings,
        artifact: Artifact,
        control_offset: int = 0,
        shadow: Artifact | None = None,
    ) -> None:
        self.s = s
        # where to follow models.control from: just after what start-up already read
        self.control_offset = control_offset
        self.scorer = Scorer(artifact, s.threshold_overrides(artifact.thresholds))
        metrics.show_model(artifact.version, artifact.meta)
        metrics.MODEL_LOADS.labels("success").inc()
        self.shadow: Scorer | None = None
        if shadow is not None:
            self._shadow(shadow)

    def versions(self) -> list[str]:
        """The model versions this worker scores with."""
        candidate = self.candidate()
        return [self.scorer.version] + ([candidate.version] if candidate else [])

    def candidate(self) -> Scorer | None:
        """The shadow to score beside the serving model (none while they are the same)."""
        if self.shadow is None or self.shadow.version == self.scorer.version:
            return None
        return self.shadow

    async def _load(self, record: dict[str, Any]) -> Artifact | None:
        """`verified` off the event loop; None (logged, counted) if refused."""
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, verified, self.s.model_dir, record
            )
        except ArtifactError as exc:
            log.error("refusing model, still serving %s: %s", self.scorer.version, exc)
            metrics.MODEL_LOADS.labels("failure").inc()
            return None

    async def switch(self, promotion: dict[str, Any]) -> bool:
        """Load the promoted version off the loop; swap only if it verifies."""
        version = promotion.get("version")
        if version == self.scorer.version:
            return True
        known = self.shadow.artifact if self.shadow is not None else None
        sha = promotion.get("sha256")
        if known and known.version == version and sha in (None, known.meta["model_sha256"]):
            artifact: Artifact | None = known  # the shadow's, loaded and verified already
        else:
            artifact = await self._load(promotion)
        if artifact is None:
            return False
        self.scorer = Scorer(artifact, self.s.threshold_overrides(artifact.thresholds))
        metrics.show_model(artifact.version, artifact.meta)
        metrics.MODEL_LOADS.labels("success").inc()
        log.warning("now serving model %s", artifact.version)
        return True

    async def follow_shadow(self, record: dict[str, Any]) -> bool:
        """Start, change or (version null) stop the shadow."""
        if record.get("version") is None:
            if self.shadow is not None:
                log.warning("shadow model %s stopped", self.shadow.version)
                self.shadow = None
                metrics.SHADOW_MODEL.info({"version": ""})
            return True
        if self.shadow is not None and record.get("version") == self.shadow.version:
            return True
        artifact = await self._load(record)
        if artifact is None:
            return False
        self._shadow(artifact)
        return True

    def _shadow(self, artifact: Artifact) -> None:
        self.shadow = Scorer(artifact, self.s.threshold_overrides(artifact.thresholds))
        metrics.show_shadow(artifact.version, artifact.meta)
        metrics.MODEL_LOADS.labels("success").inc()
        log.warning("shadow model %s scores beside %s", artifact.version, self.scorer.version)

    async def apply(self, key: bytes | None, record: dict[str, Any]) -> None:
        """A models.control record: a promotion or a shadow change (other keys: skipped)."""
        if key == CONTROL_KEY:
            await self.switch(record)
        elif key == SHADOW_KEY:
            await self.follow_shadow(record)


def _control_consumer(s: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(**connection(s), group_id=None, enable_auto_commit=False)


async def promoted(s: Settings, timeout_s: float = 10.0) -> tuple[dict[bytes, dict[str, Any]], int]:
    """The latest record of each key on models.control (`CONTROL_KEY`: the promoted model,
    `SHADOW_KEY`: the shadow) and the offset read up to."""
    consumer = _control_consumer(s)
    await consumer.start()
    latest: dict[bytes, dict[str, Any]] = {}
    try:
        tp = TopicPartition(s.topic("control_topic"), 0)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        if end == 0:
            return latest, 0
        # an explicit seek: seek_to_beginning right after end_offsets lands on the end
        consumer.seek(tp, (await consumer.beginning_offsets([tp]))[tp])
        deadline = asyncio.get_running_loop().time() + timeout_s
        while await consumer.position(tp) < end:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("reading models.control timed out")
            for msgs in (await consumer.getmany(tp, timeout_ms=500)).values():
                for m in msgs:
                    if m.key in (CONTROL_KEY, SHADOW_KEY) and m.value:
                        try:
                            latest[m.key] = orjson.loads(m.value)
                        except orjson.JSONDecodeError:
                            log.error("ignoring malformed control record at offset %d", m.offset)
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
                    if not m.value:
                        continue
                    try:
                        await server.apply(m.key, orjson.loads(m.value))
                    except orjson.JSONDecodeError:
                        log.error("ignoring malformed promotion record at offset %d", m.offset)
                        metrics.MODEL_LOADS.labels("failure").inc()
    finally:
        await consumer.stop()


async def promote(
    s: Settings, version: str | None, by: str, shadow: bool = False
) -> dict[str, Any]:
    """Verify an artifact loads here, then publish it as the promoted model (which ends
    any shadow) or, with `shadow`, as the shadow; `version` None with `shadow` ends it."""
    if version is None and not shadow:
        raise ValueError("only a shadow can be stopped: name the version to promote")
    record: dict[str, Any] = {"version": None}
    if version is not None:
        artifact = load(s.model_dir, version)
        record = {"version": artifact.version, "sha256": artifact.meta["model_sha256"]}
    record |= {"promoted_at": datetime.now(UTC).isoformat(), "promoted_by": by}
    stop = {"version": None, "promoted_at": record["promoted_at"], "promoted_by": by}
    sends = [(SHADOW_KEY, record)] if shadow else [(CONTROL_KEY, record), (SHADOW_KEY, stop)]
    producer = AIOKafkaProducer(**connection(s), acks="all")
    await producer.start()
    try:
        for key, value in sends:
            await producer.send_and_wait(s.topic("control_topic"), orjson.dumps(value), key=key)
    finally:
        await producer.stop()
    return record
