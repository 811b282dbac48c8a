"""benchmarks/harness.py: a benchmark run leaves nothing behind when it ends well (its
directory under .local held gigabytes of stores after a few dozen runs), keeps its logs when
it fails, and never waits on a worker that has exited."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import harness
from streams.settings import Settings


@pytest.fixture
def removed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """Runs whose broker state was removed (the broker itself is not what is tested)."""
    runs: list[str] = []

    async def remove_run(s: Settings, timeout_s: float = 60.0) -> None:
        runs.append(s.app_id)

    monkeypatch.setattr(harness, "remove_run", remove_run)
    monkeypatch.setattr(harness, "ROOT", tmp_path)
    return runs


async def test_a_run_that_ends_well_leaves_nothing(removed: list[str], tmp_path: Path) -> None:
    s = harness.own_run(Settings(), "bl", "bench-latency")
    async with harness.work_dir(s) as work:
        (work / "data").mkdir()
        (work / "worker.log").write_text("started")
    assert work == tmp_path / ".local" / s.app_id
    assert not work.exists()
    assert removed == [s.app_id]


async def test_a_run_that_fails_keeps_its_logs(removed: list[str]) -> None:
    s = harness.own_run(Settings(), "bl", "bench-latency")
    with pytest.raises(TimeoutError):
        async with harness.work_dir(s) as work:
            (work / "worker.log").write_text("the reason")
            raise TimeoutError("no decisions")
    assert (work / "worker.log").read_text() == "the reason"
    assert removed == [s.app_id]  # the broker is shared: its topics go either way


async def test_a_run_stops_waiting_once_a_worker_has_exited() -> None:
    worker = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    worker.wait()
    forever = asyncio.create_task(asyncio.sleep(3600))
    with pytest.raises(RuntimeError, match=f"worker pid {worker.pid} exited with status 3"):
        await asyncio.wait_for(harness.while_alive(forever, [worker]), timeout=10)
    await asyncio.sleep(0)
    assert forever.cancelled()


async def test_waiting_for_partitions_stops_once_a_worker_has_exited() -> None:
    worker = subprocess.Popen([sys.executable, "-c", "raise SystemExit(4)"])
    worker.wait()
    port = harness.free_port()  # nothing answers there: the worker owns no partition
    with pytest.raises(RuntimeError, match="exited with status 4"):
        await asyncio.wait_for(
            harness.wait_assigned("parcels.manifest", [port], [worker], timeout=60), timeout=10
        )
