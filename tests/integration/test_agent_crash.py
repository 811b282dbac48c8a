"""An agent that raises ends the worker with a non-zero exit (streams/patches/agent_errors).

Faust 0.15 on its own logs "Crashed" and keeps the process, and its /metrics, up: the
`plain` case shows that, so the `patched` one fails without the patch. In the `stuck` case,
Faust's shutdown never returns; the worker exits anyway once the crash's deadline passes.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.harness import free_port, own_run
from streams.settings import ROOT, Settings
from streams.topics import ensure_topics
from tests.conftest import Runs, publish

pytestmark = pytest.mark.integration
POISON = {"hawb": "H1"}  # any message: the agent raises on the first one


def _start(kafka: str, topic: str, kind: str, datadir: Path) -> subprocess.Popen[bytes]:
    args = [kafka, topic, str(free_port()), kind, str(datadir)]
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.crashing_app", *args],
        cwd=ROOT,
        stdout=(datadir / "app.log").open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def _wait_for(proc: subprocess.Popen[bytes], log: Path, text: str, timeout: float) -> bool:
    """Until the process exits or its log shows `text`: True if it showed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return True
        if proc.poll() is not None:
            return text in log.read_text(errors="replace")
        time.sleep(0.2)
    return False


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-6000:]


@pytest.mark.parametrize("kind", ["patched", "plain", "stuck"])
async def test_a_crashed_agent_ends_the_worker_non_zero(
    kafka: str, kind: str, tmp_path: Path, own_runs: Runs
) -> None:
    s = own_run(Settings(broker=kafka), "crash", "crash")
    own_runs.add(s.with_(app_id=f"crash-{s.topic('manifest_topic')}"))  # crashing_app's
    await ensure_topics(s)  # Faust ignores a topic that is missing when it subscribes
    proc = _start(kafka, s.topic("manifest_topic"), kind, tmp_path)
    log = tmp_path / "app.log"
    try:
        await publish(s, "manifest_topic", [POISON])  # read from the start once assigned
        # the agent raises once the app is assigned its partition: a while on a busy machine
        crashed = _wait_for(proc, log, "a stage that cannot go on", timeout=180)
        assert crashed, f"the agent never got the record:\n{_tail(log)}"
        if kind != "plain":
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                code = None
            assert code not in (None, 0), f"a crashed worker kept running:\n{_tail(log)}"
            if kind == "stuck":
                assert "did not stop within 5 s" in log.read_text(errors="replace"), _tail(log)
        else:
            time.sleep(5.0)  # what the patched worker needs to exit, with room to spare
            assert proc.poll() is None, (
                f"Faust itself now stops on agent errors (exit {proc.returncode}): "
                "streams/patches/agent_errors.py may be unnecessary"
            )
    finally:
        if proc.poll() is None:  # a stop leaves the consumer group, which teardown then deletes
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
