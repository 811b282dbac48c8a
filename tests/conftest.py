"""Shared fixtures: the real local Kafka broker, a trained model, worker processes.

Integration tests never use a mock broker: the session starts the project's own broker
(deploy/kafka) unless one already answers, and stops it by pid if it started it. Each test
gets its own topic prefix and consumer group so tests do not see each other's records.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.harness import free_port
from streams.security import connection
from streams.settings import ROOT, Settings, to_env

KAFKA_PORT = int(os.environ.get("KAFKA_PORT", "9092"))
BROKER_SCRIPT = ROOT / "deploy" / "kafka" / "broker.py"


def _broker(action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BROKER_SCRIPT), action, "--port", str(KAFKA_PORT)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="session")
def kafka() -> Iterator[str]:
    """Bootstrap address of a running broker: reused if up, else started and later stopped."""
    already = _broker("status").returncode == 0
    if not already:
        started = _broker("start")
        if started.returncode != 0:
            pytest.fail(f"could not start Kafka:\n{started.stdout}\n{started.stderr}")
    yield f"127.0.0.1:{KAFKA_PORT}"
    if not already:
        _broker("stop")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real model trained on synthetic traffic, shared by the tests of one session."""
    from models.dataset import from_generator
    from models.synthetic import GeneratorConfig
    from models.training import TrainConfig, train_and_save

    out = tmp_path_factory.mktemp("models")
    ds = from_generator(GeneratorConfig(seed=7), 30_000)
    train_and_save(ds, out, TrainConfig(seed=7, max_iter=120))
    return out


class Broker:
    """A broker of a test's own (free ports, own state dir), e.g. to restart it; with
    `secure`, it also has TLS and SASL/SCRAM-over-TLS listeners (deploy/kafka/broker.py)."""

    def __init__(self, secure: bool = False) -> None:
        self.port, self.controller = free_port(), free_port()
        self.ssl_port, self.sasl_port = (free_port(), free_port()) if secure else (0, 0)

    def run(self, action: str) -> None:
        args = [sys.executable, str(BROKER_SCRIPT), action, "--port", str(self.port)]
        args += ["--controller-port", str(self.controller)]
        args += ["--ssl-port", str(self.ssl_port), "--sasl-ssl-port", str(self.sasl_port)]
        done = subprocess.run(args, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"broker {action}: {done.stdout}\n{done.stderr}"

    @property
    def state(self) -> Path:
        return ROOT / ".local" / f"kafka-{self.port}"

    def sasl_settings(self, **kw: Any) -> Settings:
        """Settings of a client that logs in with SCRAM over TLS, trusting the local CA."""
        tool = _broker_module()
        return Settings(
            broker=f"127.0.0.1:{self.sasl_port}",
            security_protocol="SASL_SSL",
            ssl_cafile=str(self.state / "tls" / "ca.pem"),
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username=tool.SCRAM_USER,
            sasl_password=tool.SCRAM_PASSWORD,
            **kw,
        )

    def worker_settings(self, model_dir: Path, data_dir: Path, partitions: int = 4) -> Settings:
        """A worker of its own on this broker (SCRAM over TLS if the broker is secure)."""
        tag = uuid.uuid4().hex[:8]
        s = self.sasl_settings() if self.sasl_port else Settings(broker=f"127.0.0.1:{self.port}")
        return s.with_(
            topic_prefix=f"o{tag}.",
            app_id=f"parcel-risk-own-{tag}",
            model_dir=model_dir,
            web_port=free_port(),
            partitions=partitions,
            data_dir=data_dir,
        )


def _broker_module() -> Any:
    """deploy/kafka/broker.py as a module (it is a script, not part of a package)."""
    spec = importlib.util.spec_from_file_location("broker", BROKER_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _own_broker(secure: bool) -> Iterator[Broker]:
    b = Broker(secure)
    b.run("start")
    try:
        yield b
    finally:
        b.run("stop")
        shutil.rmtree(b.state, ignore_errors=True)


@pytest.fixture
def own_broker() -> Iterator[Broker]:
    yield from _own_broker(secure=False)


@pytest.fixture
def secure_broker() -> Iterator[Broker]:
    yield from _own_broker(secure=True)


@pytest.fixture
def settings(kafka: str, model_dir: Path) -> Settings:
    """Settings with a unique topic prefix and app id for this test."""
    tag = uuid.uuid4().hex[:8]
    return Settings(
        broker=kafka,
        topic_prefix=f"t{tag}.",
        app_id=f"parcel-risk-test-{tag}",
        model_dir=model_dir,
        web_port=free_port(),
        partitions=4,
        data_dir=model_dir.parent / f"worker-{tag}",
    )


class WorkerProcess:
    """A `parcel-risk worker` subprocess, stopped by its own pid."""

    def __init__(self, s: Settings, log: Path, extra_env: dict[str, str] | None = None) -> None:
        env = {**os.environ, **to_env(s), **(extra_env or {})}
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env=env,
            cwd=ROOT,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator:
    started: list[WorkerProcess] = []

    def start(s: Settings, **env: str) -> WorkerProcess:
        w = WorkerProcess(s, tmp_path / f"worker-{len(started)}.log", env)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def wait_for(predicate, timeout: float, interval: float = 0.5) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


async def read_all(
    s: Settings,
    topic_attr: str,
    idle_s: float = 3.0,
    expect: int | None = None,
    timeout: float = 120.0,
    worker: WorkerProcess | None = None,
    isolation_level: str = "read_uncommitted",
    until: Callable[[list[tuple[bytes, bytes]]], bool] | None = None,
) -> list[tuple[bytes, bytes]]:
    """Every (key, value) on a topic, read until `expect` messages, `until(got)` holds, or
    (with neither) `idle_s` of silence.

    With `worker`, a worker that died fails the read at once, with its output;
    read_committed skips messages of aborted transactions (exactly-once runs).
    """
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        s.topic(topic_attr),
        **connection(s),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        isolation_level=isolation_level,
    )
    await consumer.start()
    got: list[tuple[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() < deadline:
            if worker is not None and worker.proc.poll() is not None:
                raise AssertionError(f"worker exited:\n{worker.output()}")
            batch = await consumer.getmany(timeout_ms=500)
            for msgs in batch.values():
                got.extend((m.key, m.value) for m in msgs)
                last = time.monotonic()
            if (expect is not None and len(got) >= expect) or (until is not None and until(got)):
                # a little longer, to catch duplicates
                await asyncio.sleep(0.5)
                for msgs in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend((m.key, m.value) for m in msgs)
                break
            if expect is None and until is None and time.monotonic() - last > idle_s:
                break
    finally:
        await consumer.stop()
    return got


Source = tuple[str, int, int]  # (topic, partition, offset) of an input record


async def decisions_per_record(
    s: Settings,
    records: set[Source],
    timeout: float,
    worker: WorkerProcess | None = None,
    isolation_level: str = "read_uncommitted",
) -> dict[Source, list[int]]:
    """Each input record's decisions (their revisions), read until every one of `records`
    has one or `timeout`, and a moment longer for duplicates."""
    import orjson

    decided: dict[Source, list[int]] = {}
    read = 0

    def every_record_decided(got: list[tuple[bytes, bytes]]) -> bool:
        nonlocal read
        for _k, v in got[read:]:
            d = orjson.loads(v)
            src = (d["source"]["topic"], d["source"]["partition"], d["source"]["offset"])
            decided.setdefault(src, []).append(d["revision"])
        read = len(got)
        return records <= decided.keys()

    got = await read_all(
        s,
        "decisions_topic",
        timeout=timeout,
        worker=worker,
        isolation_level=isolation_level,
        until=every_record_decided,
    )
    every_record_decided(got)  # what arrived after the last record's first decision
    return decided


async def publish(s: Settings, topic_attr: str, records: list[dict]) -> None:
    """Produce JSON records keyed by their HAWB."""
    import orjson
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**connection(s), acks="all")
    await producer.start()
    try:
        for r in records:
            await producer.send_and_wait(
                s.topic(topic_attr), orjson.dumps(r), key=r["hawb"].encode()
            )
    finally:
        await producer.stop()


async def decisions_for(s: Settings, hawbs: set[str], timeout: float = 90.0) -> dict:
    """Wait until every HAWB has a decision; returns hawb -> list of decisions (in order)."""
    import orjson

    deadline = time.monotonic() + timeout
    found: dict[str, list[dict]] = {}
    while time.monotonic() < deadline:
        found = {}
        for _k, v in await read_all(s, "decisions_topic", idle_s=1.0, timeout=15):
            d = orjson.loads(v)
            if d["hawb"] in hawbs:
                found.setdefault(d["hawb"], []).append(d)
        if set(found) >= hawbs:
            return found
        await asyncio.sleep(1.0)
    raise AssertionError(f"no decision for {sorted(hawbs - set(found))}")


async def eventually(predicate, timeout: float, interval: float = 0.5) -> bool:  # type: ignore[no-untyped-def]
    """Async twin of wait_for: the predicate may be sync or return an awaitable."""
    import inspect

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
        except OSError:  # the worker's web server is not up yet
            result = False
        if result:
            return True
        await asyncio.sleep(interval)
    return False
