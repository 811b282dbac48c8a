"""`parcel-risk run` (what `make run` runs) as a user meets it (issues 14 and 22).

The first test changes no setting: no PARCEL_RISK_* variable, the default broker, app id,
topics, web port 6066 and model folder artifacts/models, because the tests that give every
worker its own app id once hid a crash that only the default app id took. The others give
`run` its own topics and group and check how it ends: a worker killed under it, `run`
itself killed with SIGKILL, and SIGTERM when `run` started the broker itself.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from benchmarks.harness import own_run
from streams.settings import ROOT, Settings
from tests.conftest import KAFKA_PORT, Runs, free_port, wait_for
from tests.integration.test_deployment_env import listening, status
from tests.unit.test_supervise import alive, gone_within

pytestmark = pytest.mark.integration

DEFAULTS = Settings()
BROKER = [sys.executable, str(ROOT / "deploy" / "kafka" / "broker.py")]
PIDS = re.compile(r"worker\s+pid\s+(\d+),\s+feed\s+pid\s+(\d+)")


class Run:
    """A `parcel-risk run` process, in its own process group as a shell would start it;
    the test's teardown stops it and anything it started, by pid."""

    def __init__(self, tmp: Path, args: list[str], env: dict[str, str] | None = None) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("PARCEL_RISK_")}
        script = Path(sys.executable).parent / "parcel-risk"  # the console script, as installed
        command = [str(script)] if script.exists() else [sys.executable, "-m", "streams.cli"]
        self.out, self.err = tmp / "run.out", tmp / "run.err"
        self.proc = subprocess.Popen(
            [*command, *args],
            cwd=ROOT,
            env={**clean, **(env or {})},
            stdout=self.out.open("wb"),
            stderr=self.err.open("wb"),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.children: tuple[int, int] | None = None

    def output(self) -> str:
        return self.err.read_text(errors="replace") + self.out.read_text(errors="replace")

    def pids(self, timeout: float = 60.0) -> tuple[int, int]:
        """The worker's and the feed's pids, as `run` announces them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = PIDS.search(self.err.read_text(errors="replace"))
            if found:
                self.children = (int(found[1]), int(found[2]))
                return self.children
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"run did not start its children:\n{self.output()[-5000:]}")

    def ctrl_c(self) -> None:
        """What a terminal does on Ctrl-C: SIGINT to the foreground process group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"run still running after {timeout}s") from None

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in self.children or ():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def runs(tmp_path: Path, own_runs: Runs) -> Iterator:
    started: list[Run] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> Run:
        folder = tmp_path / f"run-{len(started)}"
        folder.mkdir()
        started.append(Run(folder, args, env))
        own_runs.on_teardown(started[-1].cleanup)  # before its topics are deleted
        return started[-1]

    yield start
    for r in started:
        r.cleanup()


def own_topics_env(model_dir: Path, data_dir: Path, s: Settings | None = None) -> dict[str, str]:
    """A run of the test's own: topics, group and web port nobody else uses (those of `s`,
    from own_runs.new on a shared broker, so that they are deleted after the test)."""
    s = s or own_run(Settings(), "r", "parcel-risk-run")
    return {
        "PARCEL_RISK_TOPIC_PREFIX": s.topic_prefix,
        "PARCEL_RISK_APP_ID": s.app_id,
        "PARCEL_RISK_WEB_PORT": str(free_port()),
        "PARCEL_RISK_MODEL_DIR": str(model_dir),
        "PARCEL_RISK_DATA_DIR": str(data_dir),
        "PARCEL_RISK_STORE": "memory://",
        "PARCEL_RISK_PARTITIONS": "2",
    }


# what kcat meets while a new topic's partitions get their leader (a fresh broker)
SETTLING = ("Not leader for partition", "Leader not available", "Unknown topic or partition")


def holds_since(start_ms: int, want: int) -> list[dict]:
    """Holds on the default targeting.holds published from `start_ms` on, read with kcat as
    an analyst would (with aiokafka where kcat is missing)."""
    kcat = shutil.which("kcat")
    if kcat is None:
        return _holds_with_aiokafka(start_ms, want)
    topic = ["-b", DEFAULTS.broker, "-t", DEFAULTS.holds_topic]
    done = subprocess.run(
        [kcat, "-C", *topic, "-o", f"s@{start_ms}", "-c", str(want), "-e", "-q"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    error = done.stderr.decode(errors="replace")
    if done.returncode != 0 and any(e in error for e in SETTLING):
        return []  # a topic just created on a fresh broker: read again at the next poll
    assert done.returncode == 0, error
    return [orjson.loads(line) for line in done.stdout.splitlines() if line.strip()]


def _holds_with_aiokafka(start_ms: int, want: int) -> list[dict]:
    import asyncio

    from streams.console import tail

    async def read() -> list[dict]:
        got: list[dict] = []
        quiet = 0
        async for topic, value in tail(DEFAULTS, [DEFAULTS.holds_topic], since_ms=start_ms):
            got += [value] if topic else []
            quiet = 0 if topic else quiet + 1
            if len(got) >= want or quiet > 4:
                break
        return got

    return asyncio.run(read())


def metrics_text(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


@pytest.mark.skipif(KAFKA_PORT != 9092, reason="the default settings need the default broker")
def test_run_with_no_setting_changed_publishes_holds_and_ctrl_c_leaves_nothing(
    kafka: str, runs
) -> None:
    if not any(DEFAULTS.model_dir.glob("*/meta.json")):
        pytest.fail(f"no model in {DEFAULTS.model_dir}: `make test` trains one (make model)")
    if not _port_free(DEFAULTS.web_port):
        pytest.fail(f"port {DEFAULTS.web_port} is taken: the default worker could not listen")
    start_ms = int(time.time() * 1000)
    run = runs(["run"])  # as the README says, with nothing set
    worker, feed = run.pids()
    holds: list[dict] = []
    decided = 0.0

    def five_holds() -> bool:
        nonlocal holds
        assert run.proc.poll() is None, f"run exited:\n{run.output()[-5000:]}"
        holds = holds_since(start_ms, 5)
        return len(holds) >= 5

    assert wait_for(five_holds, timeout=240, interval=3), (
        f"{len(holds)} holds after 4 minutes:\n{run.output()[-5000:]}"
    )
    first_holds_s = time.time() - start_ms / 1000
    for h in holds:
        assert h["scored_at"] >= time.strftime("%Y-%m-%dT%H:%M", time.gmtime(start_ms / 1000))
        assert set(h["scores"]) == {"fentanyl", "counterfeit", "undervaluation"}
        assert all(0.0 <= v <= 1.0 for v in h["scores"].values())
        # a compliance sample (0.2% of parcels with an entry) is published beside the holds
        assert h["category"] in h["scores"] and h["action"] in ("hold", "review", "sample")
        assert h["reasons"] and all(isinstance(r, str) and r.strip() for r in h["reasons"])
    # the default web server: /metrics on 127.0.0.1:6066 and nowhere else, no table views
    assert listening(worker) == {("127.0.0.1", DEFAULTS.web_port)}
    assert status(f"http://127.0.0.1:{DEFAULTS.web_port}/table/") == 404
    text = ""

    def counted() -> bool:
        # the worker counts a batch once it has settled (outputs, then its table writes
        # acknowledged): a hold can be readable a moment before its count
        nonlocal text, decided
        text = metrics_text(DEFAULTS.web_port)
        decided = sum(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("parcel_risk_decisions_total ")
        )
        return decided > 0

    assert wait_for(counted, timeout=60, interval=1), text[:2000]
    assert "faust_" in text
    run.ctrl_c()
    assert run.wait(60) == 0, run.output()[-5000:]
    assert gone_within(worker, 5) and gone_within(feed, 5), "run left a child running"
    assert "stopped the feed, the worker" in run.output()
    print(f"first 5 holds readable {first_holds_s:.0f}s after start; {decided:.0f} decisions")


def test_a_worker_killed_under_run_is_reported_and_run_exits_non_zero(
    kafka: str, model_dir: Path, tmp_path: Path, runs, own_runs: Runs
) -> None:
    s = own_runs.new(Settings(broker=kafka), "r", "parcel-risk-run")
    env = {**own_topics_env(model_dir, tmp_path / "worker", s), "PARCEL_RISK_BROKER": kafka}
    run = runs(["run", "--rate", "50"], env)
    worker, feed = run.pids()
    # killed once it is working, not while it starts
    assert wait_for(lambda: _worker_started(env), 60), _worker_log()[-3000:]
    os.kill(worker, signal.SIGKILL)
    assert run.wait(60) == 1, run.output()[-5000:]
    said = " ".join(run.output().split())
    assert f"worker (pid {worker}) was killed by SIGKILL (exit code -9)" in said, said[-5000:]
    assert "last lines of" in said and "worker.log" in said
    assert gone_within(feed, 5), "the feed was left running"
    assert "stopped the feed" in said


def _worker_log() -> str:
    path = ROOT / ".local" / "logs" / "worker.log"  # where run puts it
    return path.read_text(errors="replace")[-20_000:] if path.exists() else ""


def _worker_started(env: dict[str, str]) -> bool:
    """The worker of this run has loaded its model and is starting Faust."""
    return f"worker {env['PARCEL_RISK_APP_ID']}: model" in _worker_log()


def test_sigkill_of_run_takes_the_worker_and_the_feed_with_it(
    kafka: str, model_dir: Path, tmp_path: Path, runs, own_runs: Runs
) -> None:
    s = own_runs.new(Settings(broker=kafka), "r", "parcel-risk-run")
    env = {**own_topics_env(model_dir, tmp_path / "worker", s), "PARCEL_RISK_BROKER": kafka}
    run = runs(["run", "--rate", "50"], env)
    worker, feed = run.pids()
    assert wait_for(lambda: _worker_started(env), 60), _worker_log()[-3000:]
    time.sleep(2)  # the feed producing, the worker in its group
    assert alive(worker) and alive(feed)
    os.kill(run.proc.pid, signal.SIGKILL)  # no clean-up code of run's can run
    run.proc.wait(10)
    assert gone_within(feed, 5), "the feed outlived a SIGKILLed run"
    assert gone_within(worker, 20), "the worker outlived a SIGKILLed run"


def test_sigterm_stops_run_its_children_and_the_broker_it_started(
    model_dir: Path, tmp_path: Path, runs
) -> None:
    port = free_port()
    while not _port_free(port + 1):  # broker.py puts the controller on port + 1
        port = free_port()
    env = own_topics_env(model_dir, tmp_path / "worker")  # its broker goes with its state
    run = runs(["--broker", f"127.0.0.1:{port}", "run", "--rate", "50"], env)
    try:
        worker, feed = run.pids(timeout=120)  # after starting a broker of its own
        assert _broker_status(port) == 0
        os.killpg(run.proc.pid, signal.SIGTERM)  # what a supervisor or `kill` sends
        assert run.wait(90) == 0, run.output()[-5000:]
        assert gone_within(worker, 5) and gone_within(feed, 5)
        assert "and the broker" in run.output()
        assert _broker_status(port) != 0, "run left the broker it started running"
    finally:
        if _broker_status(port) == 0:
            subprocess.run([*BROKER, "stop", "--port", str(port)], check=False, capture_output=True)
        shutil.rmtree(ROOT / ".local" / f"kafka-{port}", ignore_errors=True)


def _broker_status(port: int) -> int:
    return subprocess.run(
        [*BROKER, "status", "--port", str(port)], capture_output=True, check=False
    ).returncode


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
