"""`parcel-risk run`, the demo: broker, worker and synthetic feed in the background, the
live view in front.

The children are watched: if one dies (a finite feed that finishes is not a death), the
view says which, how and the last lines of its log, and the rest is stopped. However `run`
ends (Ctrl-C, SIGTERM, SIGHUP, or SIGKILL through the children's parent-death signal,
streams/supervise.py) no child is left behind, and a broker it started is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import Sequence

from rich.console import Console

from streams.console import failure_panel, watch
from streams.settings import ROOT, Settings
from streams.supervise import Child, spawn, stop
from streams.topics import ensure_topics


class Stopped(Exception):
    """SIGTERM or SIGHUP (a supervisor, a closed terminal): stop everything as Ctrl-C does."""


def _raise_stopped(signum: int, _frame: object) -> None:
    raise Stopped(signal.Signals(signum).name)


def run(s: Settings, feed_args: Sequence[str], seconds: float | None, err: Console) -> Child | None:
    """Run the demo until Ctrl-C, a signal, `seconds` or a child's death; returns the child
    that died, if one did."""
    broker = [sys.executable, str(ROOT / "deploy" / "kafka" / "broker.py")]
    port = s.bootstrap.rsplit(":", 1)[-1]
    ours = (
        s.bootstrap.startswith("127.0.0.1:")
        and subprocess.run(
            [*broker, "status", "--port", port], capture_output=True, check=False
        ).returncode
        != 0
    )
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_stopped)
    logs = ROOT / ".local" / "logs"
    cli = [sys.executable, "-m", "streams.cli"]
    children: list[Child] = []
    failed: Child | None = None
    try:
        if ours:
            subprocess.run([*broker, "start", "--port", port], check=True)
        asyncio.run(ensure_topics(s))
        children.append(spawn("worker", [*cli, "worker"], logs / "worker.log", ROOT))
        feed = [*cli, "generate", *feed_args]
        children.append(spawn("feed", feed, logs / "feed.log", ROOT, may_finish=True))
        err.print(
            f"worker pid {children[0].pid}, feed pid {children[1].pid}; "
            f"logs in {logs}; Ctrl-C stops"
        )
        failed = asyncio.run(watch(s, seconds, children)).failed
    except (KeyboardInterrupt, Stopped):
        pass
    finally:
        # clean-up must finish: a second Ctrl-C or a closed terminal must not cut it short
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        for child in reversed(children):
            stop(child)
        if ours:
            subprocess.run(
                [*broker, "stop", "--port", port],
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        with contextlib.suppress(OSError):
            if failed is not None and not err.is_terminal:
                err.print(failure_panel(failed))  # a terminal has it in the view already
            stopped = ", ".join(f"the {c.name}" for c in reversed(children) if c is not failed)
            err.print(f"stopped {stopped or 'nothing'}" + (" and the broker" if ours else ""))
    return failed
