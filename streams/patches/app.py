"""The worker's app class: Faust's, with the changes of this package that hang on the app."""

from __future__ import annotations

from streams.patches.agent_errors import App as CrashingApp
from streams.patches.consumer import HoldingApp


class App(CrashingApp, HoldingApp):
    """An agent that raises ends the worker (agent_errors.py); input partitions can be held
    back (consumer.py)."""
