"""An agent that raises ends the worker, with a non-zero exit code.

faust-streaming 0.15 logs "Agent ... Crashed" and leaves the process up: the stage stops
for good while /metrics keeps answering, so neither ops nor a supervisor see it (issue 15:
one record stopped every decision). Records that fail are dead-lettered inside the stages;
what still reaches the agent means the stage itself cannot go on, so the app crashes, the
worker exits 1, and `make run`, systemd or Kubernetes restart it; uncommitted input is read
again (at-least-once). Faust's own shutdown after the crash is given `crash_exit_seconds`
(Kubernetes' default grace) and is then cut short: one stop that never returned (CI, a busy
machine) left a crashed worker up, which is the very thing this patch is for.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import faust
from faust.types import AgentT

from streams import metrics
from streams.patches import written_for

log = logging.getLogger(__name__)


class App(faust.App):
    """The worker's app: a crashed agent crashes the worker (App._on_agent_error is Faust's
    hook for agent errors)."""

    failure: tuple[str, BaseException] | None = None
    crash_exit_seconds = 30.0

    async def _on_agent_error(self, agent: AgentT[Any], exc: BaseException) -> None:
        await super()._on_agent_error(agent, exc)
        log.critical("agent %s stopped on %r: the worker exits to be restarted", agent.name, exc)
        metrics.AGENT_CRASHES.labels(agent.name).inc()
        self.failure = (agent.name, exc)
        _exit_after(self.crash_exit_seconds)
        await self.crash(exc)


_deadline: threading.Timer | None = None


def _exit_after(seconds: float) -> None:
    """Exit 1 in `seconds` unless the process is gone by then (armed once, by the first crash):
    a thread, so that a loop that is stuck, or never let go, does not keep it up."""
    global _deadline
    if _deadline is None:
        _deadline = threading.Timer(seconds, _exit_now, args=(seconds,))
        _deadline.daemon = True
        _deadline.start()


def _exit_now(seconds: float) -> None:
    log.critical("the worker did not stop within %.0f s of a crashed agent: exiting now", seconds)
    logging.shutdown()  # flush the handlers: os._exit skips them
    os._exit(1)


def stopped_agents(app: faust.App) -> list[str]:
    """Agents one of whose actors is no longer running (after it has started)."""
    return sorted(
        name
        for name, agent in app.agents.items()
        for actor in list(getattr(agent, "_actors", ()))
        if actor.actor_task is not None and actor.actor_task.done()
    )


written_for("faust-streaming", "0.15.3")
