"""A Faust worker whose agent raises, for tests/integration/test_agent_crash.py.

`python -m tests.integration.crashing_app BROKER TOPIC WEB_PORT patched|plain|stuck DATADIR`:
with the project's App (streams/patches) the worker must exit non-zero; with Faust's own it
stays up; `stuck` is the project's App whose loop hangs as it crashes (so Faust's
shutdown never ends), with a deadline of 5 s to exit anyway.
"""

from __future__ import annotations

import asyncio
import sys
import time

import faust

from streams.patches.agent_errors import App


def main() -> None:
    broker, topic, port, kind, datadir = sys.argv[1:6]
    cls = faust.App if kind == "plain" else App
    app = cls(
        f"crash-{topic}",
        broker=f"kafka://{broker}",
        store="memory://",
        web_port=int(port),
        datadir=datadir,  # Faust's default is the working directory: the test's tmp_path
        autodiscover=False,
        topic_allow_declare=True,
    )

    @app.agent(app.topic(topic, partitions=1))
    async def fails(stream):  # type: ignore[no-untyped-def]
        async for _value in stream:
            if kind == "stuck":
                App.crash_exit_seconds = 5.0
                asyncio.get_running_loop().call_later(0.1, time.sleep, 3600)
            raise RuntimeError("a stage that cannot go on")

    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
