"""Children of `parcel-risk run` die with it, however it dies (issue 22.4), and are
described in words when they die first (issue 14.2)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.settings import ROOT
from streams.supervise import describe_exit, spawn, stop

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for init to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return False


def parent_of_a_sleeper(tmp_path: Path, supervised: bool) -> tuple[subprocess.Popen, int]:
    """A process that starts a sleeping child (with spawn(), or with a plain Popen) and
    prints the child's pid; returns the parent and that pid."""
    start = (
        "from streams.supervise import spawn; "
        f"c = spawn('sleeper', {SLEEPER!r}, Path({str(tmp_path / 's.log')!r}), Path('.'))"
        if supervised
        else f"import subprocess; c = subprocess.Popen({SLEEPER!r}, start_new_session=True)"
    )
    code = f"import sys, time; from pathlib import Path; {start}; print(c.pid, flush=True); "
    code += "time.sleep(120)"
    parent = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=ROOT, text=True
    )
    assert parent.stdout is not None
    line = parent.stdout.readline()
    assert line.strip().isdigit(), f"no pid from the parent: {line!r}"
    return parent, int(line)


@pytest.mark.skipif(sys.platform != "linux", reason="parent-death signal is Linux's prctl")
def test_a_child_dies_when_its_parent_is_killed_with_sigkill(tmp_path: Path) -> None:
    parent, child = parent_of_a_sleeper(tmp_path, supervised=True)
    try:
        assert alive(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        assert gone_within(child, 5.0), "the child outlived its SIGKILLed parent"
    finally:
        parent.kill()
        if alive(child):
            os.kill(child, signal.SIGKILL)


def test_without_supervision_the_child_would_be_left_behind(tmp_path: Path) -> None:
    """The control: what `run` did before (own session, no parent-death signal) leaks."""
    parent, child = parent_of_a_sleeper(tmp_path, supervised=False)
    try:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        assert not gone_within(child, 2.0)
    finally:
        parent.kill()
        if alive(child):
            os.kill(child, signal.SIGKILL)


def test_stop_reaches_what_the_child_started_in_its_group(tmp_path: Path) -> None:
    code = (
        "import subprocess, sys, time; "
        f"g = subprocess.Popen({SLEEPER!r}); print(g.pid, flush=True); time.sleep(120)"
    )
    log = tmp_path / "c.log"
    child = spawn("worker", [sys.executable, "-c", code], log, tmp_path)
    deadline = time.monotonic() + 20
    while not log.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.1)
    grandchild = int(log.read_text().split()[0])
    try:
        stop(child, timeout=10)
        assert child.proc.returncode == -signal.SIGTERM
        assert gone_within(grandchild, 5.0)
    finally:
        if alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)


def test_exit_codes_in_words() -> None:
    assert describe_exit(1) == "exited with code 1"
    assert describe_exit(0) == "exited with code 0"
    assert describe_exit(-9) == "was killed by SIGKILL (exit code -9)"
    assert describe_exit(-15) == "was killed by SIGTERM (exit code -15)"
    assert describe_exit(-99) == "was killed by signal 99 (exit code -99)"
