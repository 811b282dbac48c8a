"""An agent that raises ends the worker with a non-zero exit (streams/patches/agent_errors).

Faust 0.15 on its own logs "Crashed" and keeps the process, and its /metrics, up: the
second case shows that, so the first one fails without the patch.
"""

from __future__ import annotations

import subprocess
import sys
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
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


@pytest.mark.parametrize("kind", ["patched", "plain"])
async def test_a_crashed_agent_ends_the_worker_non_zero(
    kafka: str, kind: str, tmp_path: Path, own_runs: Runs
) -> None:
    s = own_run(Settings(broker=kafka), "crash", "crash")
    own_runs.add(s.with_(app_id=f"crash-{s.topic('manifest_topic')}"))  # crashing_app's
    await ensure_topics(s)  # Faust ignores a topic that is missing when it subscribes
    proc = _start(kafka, s.topic("manifest_topic"), kind, tmp_path)
    try:
        await publish(s, "manifest_topic", [POISON])  # read from the start once assigned
        try:
            code = proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            code = None
        out = proc.stdout.read().decode(errors="replace") if code is not None else ""
        if kind == "patched":
            assert code not in (None, 0), "a worker with a crashed agent kept running"
            assert "a stage that cannot go on" in out
        else:
            assert code is None, (
                f"Faust itself now stops on agent errors (exit {code}): "
                "streams/patches/agent_errors.py may be unnecessary"
            )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
