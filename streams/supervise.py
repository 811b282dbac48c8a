"""The child processes of `parcel-risk run`: started so that they cannot outlive it, and
watched so that a death is reported instead of leaving a silent view.

Each child gets its own process group (a stop reaches whatever it started) and, on Linux,
a parent-death signal: if `run` itself dies, even by SIGKILL, the kernel sends the child
SIGTERM, so a closed terminal or a supervisor's kill leaves no orphan feeding Kafka.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PR_SET_PDEATHSIG = 1  # linux/prctl.h
# SIGTERM, not SIGKILL: the worker then leaves its consumer group and commits what it did,
# so the next run does not wait out the session timeout or redo acknowledged work
DEATH_SIGNAL = signal.SIGTERM


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to signal the child when this process dies (Linux)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: process groups only
        return None
    parent = os.getpid()

    def preexec() -> None:
        if prctl(PR_SET_PDEATHSIG, int(DEATH_SIGNAL), 0, 0, 0) != 0:
            os._exit(125)  # cannot promise the child dies with us: do not start it
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(125)

    return preexec


@dataclass
class Child:
    """A process `run` started: its name in the view, its log and where this run's part of
    the log starts (logs are appended across runs)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    log_start: int = 0
    # a feed with a --count may finish: exit 0 is then the end of its work, not a failure
    may_finish: bool = False
    finished: bool = field(default=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def failure(self) -> str | None:
        """None while it runs (or finished as it may); else what happened, in words."""
        code = self.proc.poll()
        if code is None:
            return None
        if code == 0 and self.may_finish:
            self.finished = True
            return None
        return f"{self.name} (pid {self.pid}) {describe_exit(code)}"

    def last_lines(self, n: int = 12) -> list[str]:
        """The last lines this run's process wrote to its log."""
        try:
            with self.log.open("rb") as f:
                f.seek(self.log_start)
                text = f.read()[-64 * 1024 :].decode(errors="replace")
        except OSError as exc:
            return [f"(log {self.log} unreadable: {exc})"]
        lines = [ln for ln in text.splitlines() if ln.strip()]
        return lines[-n:] if lines else ["(its log is empty)"]


def describe_exit(code: int) -> str:
    """Popen's return code in words: 'exited with code 1', 'was killed by SIGKILL'."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name} (exit code {code})"
    return f"exited with code {code}"


def spawn(
    name: str,
    argv: Sequence[str],
    log: Path,
    cwd: Path,
    *,
    env: dict[str, str] | None = None,
    may_finish: bool = False,
) -> Child:
    """Start a child in its own process group that dies with this process; output to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = log.stat().st_size if log.exists() else 0
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: stop() reaches its children too
            preexec_fn=_die_with_parent(),
            cwd=cwd,
            env=env,
        )
    return Child(name, proc, log, start, may_finish)


def stop(child: Child, timeout: float = 15.0) -> None:
    """SIGTERM to the child's process group, SIGKILL if it is still there after `timeout`."""
    if child.proc.poll() is not None:
        return
    try:
        os.killpg(child.pid, signal.SIGTERM)
        child.proc.wait(timeout)
    except ProcessLookupError:
        child.proc.wait()
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.proc.wait()


def first_failure(children: Sequence[Child]) -> Child | None:
    """The first child that died (or exited when it should not have), if any."""
    return next((c for c in children if c.failure() is not None), None)
