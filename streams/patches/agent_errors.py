"""An agent that raises ends the worker, with a non-zero exit code.

faust-streaming 0.15 logs "Agent ... Crashed" and leaves the process up: the stage stops
for good while /metrics keeps answering, so neither ops nor a supervisor see it (issue 15:
one record stopped every decision). Records that fail are dead-lettered inside the stages;
what still reaches the agent means the stage itself cannot go on, so the app crashes, the
worker exits 1, and `make run`, systemd or Kubernetes restart it; uncommitted input is read
again (at-least-once).
"""

from __future__ import annotations

import logging
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

    async def _on_agent_error(self, agent: AgentT[Any], exc: BaseException) -> None:
        await super()._on_agent_error(agent, exc)
        log.critical("agent %s stopped on %r: the worker exits to be restarted", agent.name, exc)
        metrics.AGENT_CRASHES.labels(agent.name).inc()
        self.failure = (agent.name, exc)
        await self.crash(exc)


def stopped_agents(app: faust.App) -> list[str]:
    """Agents one of whose actors is no longer running (after it has started)."""
    return sorted(
        name
        for name, agent in app.agents.items()
        for actor in list(getattr(agent, "_actors", ()))
        if actor.actor_task is not None and actor.actor_task.done()
    )


written_for("faust-streaming", "0.15.3")
