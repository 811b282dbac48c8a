"""Live promotion on the real broker: the switch shows in decisions, nothing is lost."""

from __future__ import annotations

import itertools
import shutil
from collections import Counter

import orjson
import pytest

from benchmarks.harness import metric_value
from models.dataset import from_generator
from models.registry import ArtifactError, versions
from models.synthetic import GeneratorConfig, TrafficGenerator
from models.training import TrainConfig, train_and_save
from streams.feed import produce_events
from streams.serving import promote
from streams.topics import ensure_topics
from tests.conftest import eventually, read_all

pytestmark = pytest.mark.integration


@pytest.fixture
def two_models(model_dir, tmp_path):
    """A private model folder with the session's model and a second, different one."""
    folder = tmp_path / "models"
    shutil.copytree(model_dir, folder)
    first = versions(folder)[0]
    second, _ = train_and_save(
        from_generator(GeneratorConfig(seed=99), 8_000), folder, TrainConfig(seed=99, max_iter=40)
    )
    return folder, first, second


async def test_promotion_switches_running_worker_without_loss(
    settings, start_worker, two_models
) -> None:
    s, first, second, worker = await _serving_first(settings, start_worker, two_models)
    gen = TrafficGenerator(GeneratorConfig(seed=5))
    events = list(gen.events(2000))
    half = len(events) // 2
    sent: list = []
    await produce_events(s, events[:half], sent=sent)
    assert await eventually(lambda: _count(s, half // 2), timeout=120), worker.output()

    await promote(s, second, by="test")
    assert await eventually(
        lambda: metric_value(s.web_port, "parcel_risk_model_info", {"version": second}) == 1.0,
        timeout=60,
    )
    await produce_events(s, events[half:], sent=sent)
    decisions = await read_all(s, "decisions_topic", expect=len(sent), timeout=180)
    by_version = Counter(orjson.loads(v)["model_version"] for _k, v in decisions)
    assert sum(by_version.values()) == len(sent)  # every record decided, none twice
    assert set(by_version) == {first, second}
    # one worker scores batch after batch: in scoring order the model switches exactly once
    seq = [
        d["model_version"]
        for d in sorted((orjson.loads(v) for _k, v in decisions), key=lambda d: d["scored_at"])
    ]
    assert sum(a != b for a, b in itertools.pairwise(seq)) == 1
    assert seq[0] == first and seq[-1] == second


async def test_broken_artifact_refused_and_old_model_serves(
    settings, start_worker, two_models
) -> None:
    s, first, second, _worker = await _serving_first(settings, start_worker, two_models)
    assert await eventually(lambda: _up(s), timeout=60)
    blob = s.model_dir / second / "model.skops"
    blob.write_bytes(blob.read_bytes()[:-100] + b"tampered" * 12 + blob.read_bytes()[-4:])
    with pytest.raises(ArtifactError, match="checksum"):
        await promote(s, second, by="test")
    # a promotion record published by someone else is refused by the worker too
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap)
    await producer.start()
    await producer.send_and_wait(
        s.topic("control_topic"), orjson.dumps({"version": second}), key=b"model"
    )
    await producer.stop()
    assert await eventually(
        lambda: (
            metric_value(s.web_port, "parcel_risk_model_loads_total", {"result": "failure"}) >= 1
        ),
        timeout=60,
    )
    assert metric_value(s.web_port, "parcel_risk_model_info", {"version": first}) == 1.0


async def _serving_first(settings, start_worker, two_models):
    """A worker started after the first model was promoted."""
    folder, first, second = two_models
    s = settings.with_(model_dir=folder)
    await ensure_topics(s)
    await promote(s, first, by="test")
    return s, first, second, start_worker(s)


def _up(s) -> bool:
    return metric_value(s.web_port, "parcel_risk_model_loads_total", {"result": "success"}) >= 1


async def _count(s, n: int) -> bool:
    return len(await read_all(s, "decisions_topic", idle_s=1.0, timeout=10)) >= n
