"""A worker started on a backlog: how soon decisions come and whether any stage starves.

    python -m benchmarks.backlog [--parcels 260000] [--minutes 4]

Preloads generated parcels (about two input records each: 500k records by default) into
the input topics, then runs one worker on them twice, each time in a fresh consumer group:
with the input held back while stage envelopes wait (the default), and never held (the
baseline). Every 5 s it samples the decisions topic and what each stage has consumed (its
group's committed offsets). Prints the time to the first decision, decisions per 30 s
window beside the stages' progress, and the first minute's rate against the run's best
30 s window (issue 22: decisions within 30 s, at least half the rate from the first
minute).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from benchmarks import harness
from benchmarks.throughput import preload
from streams.security import connection, reader
from streams.settings import Settings
from streams.topics import ensure_topics, stage_topic

SAMPLE_S = 5.0
WINDOW_S = 30.0


async def consumed(admin: AIOKafkaAdminClient, s: Settings) -> dict[str, int]:
    """Records (inputs) and envelopes (stages) the worker's group has committed, per stage."""
    offsets = await admin.list_consumer_group_offsets(s.app_id)
    stages = {
        "join": (s.topic("manifest_topic"), s.topic("entries_topic")),
        "consignee": (stage_topic(s, "by-consignee"),),
        "score": (stage_topic(s, "by-shipper"),),
    }
    return {
        stage: sum(md.offset for tp, md in offsets.items() if tp.topic in topics and md.offset > 0)
        for stage, topics in stages.items()
    }


async def decisions(c: AIOKafkaConsumer, s: Settings) -> int:
    tps = [TopicPartition(s.topic("decisions_topic"), p) for p in range(s.partitions)]
    return sum((await c.end_offsets(tps)).values())


@dataclass
class Run:
    samples: list[tuple[float, int, dict[str, int]]]
    first: float | None  # seconds to the first decision


async def run(s: Settings, minutes: float, stage_backlog: int) -> Run:
    """One worker (its own consumer group) on the preloaded input, sampled every SAMPLE_S."""
    s = s.with_(stage_backlog=stage_backlog)
    log = s.data_dir.parent / f"{s.app_id}.log"  # one per run: held, never
    c = AIOKafkaConsumer(**reader(s), group_id=None, enable_auto_commit=False)
    admin = AIOKafkaAdminClient(**connection(s))
    await c.start()
    await admin.start()
    before = await decisions(c, s)  # an earlier run's, on the same topic
    proc = harness.start_worker(s, log)
    started = time.monotonic()
    result = Run([], None)
    try:
        while time.monotonic() - started < minutes * 60:
            await asyncio.sleep(SAMPLE_S)
            if proc.poll() is not None:
                raise SystemExit(f"the worker exited ({proc.returncode}); see {log}")
            t = time.monotonic() - started
            n = await decisions(c, s) - before
            if n and result.first is None:
                result.first = t
            result.samples.append((t, n, await consumed(admin, s)))
    finally:
        harness.stop(proc)
        await c.stop()
        await admin.close()
    return result


def report(label: str, result: Run) -> float:
    """Print the run's windows; returns its first minute's share of its best window."""
    first = "none" if result.first is None else f"{result.first:.0f} s"
    print(f"{label}: first decision after {first} (target <= 30 s)")
    print(
        f"{'window':>10} {'decisions/s':>12} {'join rec/s':>11} "
        f"{'stage 2 env/s':>14} {'stage 3 env/s':>14}"
    )
    windows: list[float] = []
    prev = (0.0, 0, {"join": 0, "consignee": 0, "score": 0})
    for t, n, done in result.samples:
        if t - prev[0] < WINDOW_S - 1e-6:
            continue
        span = t - prev[0]
        rate = (n - prev[1]) / span
        windows.append(rate)
        print(
            f"{prev[0]:>4.0f}-{t:<4.0f}s {rate:>12,.0f} "
            f"{(done['join'] - prev[2]['join']) / span:>11,.0f} "
            f"{(done['consignee'] - prev[2]['consignee']) / span:>14,.1f} "
            f"{(done['score'] - prev[2]['score']) / span:>14,.1f}"
        )
        prev = (t, n, done)
    if len(windows) < 2 or not max(windows):
        return 0.0
    first_minute, best = (windows[0] + windows[1]) / 2, max(windows)
    print(
        f"first minute {first_minute:,.0f} decisions/s, best window {best:,.0f}/s: "
        f"{first_minute / best:.0%} (target >= 50%); "
        f"{result.samples[-1][1]:,} decisions in {result.samples[-1][0]:.0f} s"
    )
    return first_minute / best


async def measure(s: Settings, args: argparse.Namespace) -> None:
    await ensure_topics(s)
    records = await preload(s, args.parcels, args.seed)
    print(f"backlog: {records:,} input records, {args.partitions} partitions, one worker")
    held = report(
        f"input held back while stage envelopes wait (PARCEL_RISK_STAGE_BACKLOG={args.backlog})",
        await run(s.with_(app_id=f"{s.app_id}-held"), args.minutes, args.backlog),
    )
    never = report(
        "input never held (PARCEL_RISK_STAGE_BACKLOG=0, the baseline)",
        await run(s.with_(app_id=f"{s.app_id}-never"), args.minutes, 0),
    )
    if never:
        print(f"first minute's share of the best window, held / never held: {held / never:.1f}x")


async def main() -> None:
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--parcels", type=int, default=260_000, help="about 2 records each")
    a.add_argument("--minutes", type=float, default=4.0, help="per run")
    a.add_argument("--backlog", type=int, default=Settings().stage_backlog)
    a.add_argument("--partitions", type=int, default=8)
    a.add_argument("--broker", default="127.0.0.1:9092")
    a.add_argument("--seed", type=int, default=12)
    args = a.parse_args()
    s = harness.own_run(
        Settings(broker=args.broker, partitions=args.partitions), "bb", "bench-backlog"
    )
    async with harness.work_dir(s) as work:  # its topics, changelogs and group go at the end
        await measure(s.with_(data_dir=work / "data"), args)


if __name__ == "__main__":
    asyncio.run(main())
