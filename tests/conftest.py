"""Shared fixtures: the real local Kafka broker, a trained model, worker processes.

Integration tests never use a mock broker: the session starts the project's own broker
(deploy/kafka) unless one already answers, and stops it by pid if it started it. Each test
gets its own topic prefix and consumer group so tests do not see each other's records, and
deletes them at teardown (the `runs` fixture, benchmarks/harness.remove_run): the broker is
often the user's own (`make run`'s), and thousands of leftover partitions once kept it from
starting. The session ends by checking that no test left any behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from benchmarks.harness import broker_script, free_port, leftovers, own_run, remove_run
from streams.security import connection
from streams.settings import ROOT, Settings, to_env

T = TypeVar("T")
KAFKA_PORT = int(os.environ.get("KAFKA_PORT", "9092"))
BROKER_SCRIPT = ROOT / "deploy" / "kafka" / "broker.py"


def _broker(action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BROKER_SCRIPT), action, "--port", str(KAFKA_PORT)],
        capture_output=True,
        text=True,
        check=False,
    )


def blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end from sync code, in a thread of its own: a fixture's
    teardown may come while an async test's event loop is still the thread's."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


# every run of its own this session made on the shared broker, for the check at its end
SESSION_RUNS: list[Settings] = []


@pytest.fixture(scope="session")
def kafka() -> Iterator[str]:
    """Bootstrap address of a running broker: reused if up, else started and later stopped.

    At the end of the session, no topic or consumer group of a test may be left on it."""
    already = _broker("status").returncode == 0
    if not already:
        started = _broker("start")
        if started.returncode != 0:
            pytest.fail(f"could not start Kafka:\n{started.stdout}\n{started.stderr}")
    address = f"127.0.0.1:{KAFKA_PORT}"
    try:
        yield address
        left = {
            s.app_id: found
            for s in SESSION_RUNS
            if s.broker == address and any(found := blocking(leftovers(s)))
        }
        assert not left, f"tests left topics/groups on the broker at {address}: {left}"
    finally:
        if not already:
            _broker("stop")


class Runs:
    """The runs of its own (topic prefix, app id) of one test on a shared broker, and the
    processes writing to them: at teardown the processes are stopped first, then every
    topic and consumer group of the runs is deleted."""

    def __init__(self) -> None:
        self.settings: list[Settings] = []
        self.stops: list[Callable[[], None]] = []

    def new(self, base: Settings, kind: str, app: str) -> Settings:
        """`base` with a topic prefix and app id of its own (benchmarks/harness.own_run)."""
        return self.add(own_run(base, kind, app))

    def add(self, s: Settings) -> Settings:
        """Delete the topics and groups of `s` (its prefix, its app id) at teardown."""
        self.settings.append(s)
        SESSION_RUNS.append(s)
        return s

    def on_teardown(self, stop: Callable[[], None]) -> None:
        """Stop a process of these runs before their topics are deleted."""
        self.stops.append(stop)

    def close(self) -> None:
        for stop in reversed(self.stops):
            stop()
        self.stops.clear()
        for s in self.settings:
            blocking(remove_run(s))


@pytest.fixture
def own_runs() -> Iterator[Runs]:
    """Set up before `settings` and `start_worker`, which use it, so torn down after them."""
    runs = Runs()
    yield runs
    runs.close()


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
        tool = broker_script()
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
        """A worker of its own on this broker (SCRAM over TLS if the broker is secure); the
        broker's state goes with it, so its topics need no deleting."""
        s = self.sasl_settings() if self.sasl_port else Settings(broker=f"127.0.0.1:{self.port}")
        return own_run(s, "o", "parcel-risk-own").with_(
            model_dir=model_dir,
            web_port=free_port(),
            partitions=partitions,
            data_dir=data_dir,
        )


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
def settings(kafka: str, model_dir: Path, own_runs: Runs) -> Settings:
    """Settings with a unique topic prefix and app id for this test (deleted after it)."""
    s = own_runs.new(Settings(broker=kafka), "t", "parcel-risk-test")
    return s.with_(
        model_dir=model_dir,
        web_port=free_port(),
        partitions=4,
        data_dir=model_dir.parent / f"worker-{s.app_id}",
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
def start_worker(tmp_path: Path, own_runs: Runs) -> Iterator:
    started: list[WorkerProcess] = []

    def start(s: Settings, **env: str) -> WorkerProcess:
        w = WorkerProcess(s, tmp_path / f"worker-{len(started)}.log", env)
        started.append(w)
        own_runs.on_teardown(w.stop)  # before its topics are deleted, if the test failed
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
    isolation_level: str = "read_committed",
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
    isolation_level: str = "read_committed",
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
