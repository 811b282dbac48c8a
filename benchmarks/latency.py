"""Latency under offered load: from a parcel's produce time to its hold being readable.

    python -m benchmarks.latency [--rates 300 1000 5000] [--seconds 30] [--stages]
        [--guarantees at_least_once exactly_once] [--workers 1]

For each rate, fresh workers (one unless `--workers`, in one group) are started on fresh
topics and warmed up; generated parcels are then produced at that rate (paced by the wall
clock, in 10 ms ticks) while a consumer reads targeting.holds and parcels.decisions. A
record's latency is the wall-clock time at which its hold (or decision) was read, minus the
time its input record was sent; both are matched by the input's topic, partition and
offset, which every output carries.

After each rate, the worker's own timing of its stages' batches (/metrics,
`parcel_risk_stage_batch_seconds`) is printed: per stage, its batches and their mean time
computing and settling (waiting for the broker's acknowledgements or the transaction).

`--stages` also reads the worker's stage-to-stage topics and prints when each stage
produced a record's output (the Kafka timestamp of its envelope, which carries the input's
source), to show which stage the time goes to; unpacking every envelope costs the reader
CPU on a small machine, so those runs are slower overall. The worker's CPU use during the
offer is printed too: whether it waits or computes; and the machine's, with the share the
hypervisor stole (a virtual machine's cores are shared with other guests: a worker waiting
for a core shows as steal, not as its own CPU time).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from datetime import timedelta

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer

from benchmarks import harness
from models.synthetic import GeneratorConfig, TrafficGenerator
from streams import envelopes
from streams.agents import CONSIGNEES, FILERS, JOIN, SCORE
from streams.feed import producer_for
from streams.settings import Settings
from streams.topics import ensure_topics, stage_topic

Where = tuple[str, int, int]
SCORED = "stage 3 (score) produced"  # from the decision's own Kafka timestamp


def stage_topics(s: Settings) -> dict[str, str]:
    """The worker's stage-to-stage topics, by what their records' timestamps mean."""
    return {
        stage_topic(s, "by-consignee"): "stage 1 (join) produced",
        stage_topic(s, "by-shipper"): "stage 2 (consignee) produced",
    }


def stage_seconds(ports: list[int]) -> dict[tuple[str, str, str], float]:
    """The workers' timings of their stages' batches so far, summed: (stage, step, "count"
    or "sum") -> value, from their /metrics."""
    samples = [sample for port in ports for sample in harness.metric_samples(port)]
    return {
        (stage, step, kind): harness.sample_sum(
            samples, f"parcel_risk_stage_batch_seconds_{kind}", {"stage": stage, "step": step}
        )
        for stage in (JOIN, CONSIGNEES, SCORE, FILERS)
        for step in ("compute", "settle")
        for kind in ("count", "sum")
    }


def stage_report(
    before: dict[tuple[str, str, str], float], after: dict[tuple[str, str, str], float]
) -> list[str]:
    """Per stage, between two readings: batches, mean compute and mean settle time."""
    lines = []
    for stage in dict.fromkeys(stage for stage, _step, _kind in after):
        n = after[stage, "compute", "count"] - before[stage, "compute", "count"]
        if not n:
            continue
        mean = {
            step: (after[stage, step, "sum"] - before[stage, step, "sum"]) / n * 1000
            for step in ("compute", "settle")
        }
        lines.append(
            f"  batches of {stage + ':':<18} {n:6,.0f}, mean compute {mean['compute']:5.1f} ms,"
            f" settle {mean['settle']:5.1f} ms"
        )
    return lines


def _where(src: dict) -> Where:
    return (src["topic"], src["partition"], src["offset"])


async def read_outputs(
    s: Settings,
    arrivals: dict[str, dict[Where, float]],
    ready: asyncio.Event,
    stop: asyncio.Event,
    stages: bool = False,
) -> None:
    """Record when each hold and decision becomes readable, keyed by its input record.

    With `stages`, also when each stage produced it (Kafka timestamps, the worker's clock).
    """
    topics = {s.topic("holds_topic"): "holds", s.topic("decisions_topic"): "decisions"}
    internal = stage_topics(s) if stages else {}
    c = AIOKafkaConsumer(
        *topics,
        *internal,
        bootstrap_servers=s.bootstrap,
        group_id=None,
        auto_offset_reset="latest",
        isolation_level="read_committed",  # what analysts read, under either guarantee
        fetch_max_wait_ms=10 if stages else 500,
    )
    await c.start()
    try:
        while not c.assignment():
            await asyncio.sleep(0.05)
        await c.seek_to_end()
        ready.set()
        while not stop.is_set():
            for tp, msgs in (await c.getmany(timeout_ms=100)).items():
                now = time.time()
                if tp.topic in internal:
                    got = arrivals[internal[tp.topic]]
                    for m in msgs:
                        for rec in envelopes.unpack(m.value):
                            got.setdefault(_where(rec["source"]), m.timestamp / 1000)
                    continue
                for m in msgs:
                    out = orjson.loads(m.value)
                    arrivals[topics[tp.topic]].setdefault(_where(out["source"]), now)
                    if stages and tp.topic == s.topic("decisions_topic"):
                        got = arrivals[SCORED]
                        got.setdefault(_where(out["source"]), m.timestamp / 1000)
    finally:
        await c.stop()


async def offer(s: Settings, rate: float, seconds: float, seed: int) -> dict[Where, float]:
    """Produce generated parcels at `rate` records/s; returns input record -> send time."""
    topics = {"manifest": s.topic("manifest_topic"), "entry": s.topic("entries_topic")}
    events = TrafficGenerator(GeneratorConfig(seed=seed)).events(
        int(rate * seconds), horizon=timedelta(0)
    )
    p = producer_for(s, linger_ms=2)
    await p.start()
    sent: list[tuple[asyncio.Future, float]] = []
    try:
        start = time.monotonic()
        per_tick = rate / 100
        due = 0.0
        for i, ev in enumerate(events):
            if i >= rate * seconds:
                break
            if i >= due:
                due += per_tick
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            sent.append((await p.send(topics[ev.kind], ev.value, key=ev.key.encode()), time.time()))
        await p.flush()
    finally:
        await p.stop()
    return {(md.topic, md.partition, md.offset): t for fut, t in sent if (md := fut.result())}


async def sample_machine(
    samples: list[tuple[float, harness.MachineTime]], stop: asyncio.Event
) -> None:
    """The machine's CPU time, every second until `stop`: for the timeline."""
    while not stop.is_set():
        samples.append((time.time(), harness.machine_time()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


def timeline(
    sent: dict[Where, float],
    read: dict[Where, float],
    samples: list[tuple[float, harness.MachineTime]],
    step: float = 5.0,
) -> list[str]:
    """Per `step` seconds of the offer (by send time): the holds' p50 and p99, and what the
    machine did meanwhile, so a slow spell can be put beside the machine's steal."""
    start, end = min(sent.values()), max(sent.values())
    lines = []
    lo = start
    while lo <= end:
        hi = lo + step
        lat = [read[w] - t for w, t in sent.items() if lo <= t < hi and w in read]
        spell = [m for t, m in samples if lo <= t <= hi + 1.0]
        machine = (spell[-1] - spell[0]).shares() if len(spell) > 1 else "no samples"
        ms = np.array(lat or [np.nan]) * 1000
        lines.append(
            f"    {lo - start:4.0f}-{hi - start:.0f} s: hold p50 {np.percentile(ms, 50):6.0f} ms, "
            f"p99 {np.percentile(ms, 99):6.0f} ms; {machine}"
        )
        lo = hi
    return lines


def summary(latencies: list[float]) -> str:
    if not latencies:
        return "none read"
    ms = np.array(latencies) * 1000
    return (
        f"p50 {np.percentile(ms, 50):7.0f} ms  p99 {np.percentile(ms, 99):7.0f} ms  "
        f"max {ms.max():7.0f} ms  (n={len(ms):,})"
    )


async def run(
    broker: str,
    rate: float,
    seconds: float,
    partitions: int,
    seed: int,
    stages: bool,
    guarantee: str = "at_least_once",
    workers: int = 1,
) -> None:
    base = Settings(broker=broker, partitions=partitions, processing_guarantee=guarantee)
    s = harness.own_run(base, "bl", "bench-latency")
    async with harness.work_dir(s) as work:  # its topics, changelogs and group go at the end
        await ensure_topics(s)
        ports = [harness.free_port() for _ in range(workers)]
        procs = [
            harness.start_worker(
                s.with_(data_dir=work / f"data-{i}"), work / f"worker-{i}.log", web_port=port
            )
            for i, port in enumerate(ports)
        ]
        try:
            await offer(s, 50, 2, seed + 1)  # warm-up: the workers join and load their model
            await harness.wait_for_count(
                s, s.topic("decisions_topic"), 100, timeout=300, workers=procs
            )
            await harness.wait_assigned(s.topic("manifest_topic"), ports, procs, timeout=300)
            arrivals: dict[str, dict[Where, float]] = {"holds": {}, "decisions": {}}
            if stages:
                arrivals |= {name: {} for name in stage_topics(s).values()}
                arrivals[SCORED] = {}
            ready, stop = asyncio.Event(), asyncio.Event()
            reader = asyncio.create_task(read_outputs(s, arrivals, ready, stop, stages))
            await ready.wait()
            local_broker = harness.broker_pid(s.bootstrap)
            pids = [p.pid for p in procs] + ([local_broker] if local_broker else [])
            cpu, wall = [harness.cpu_seconds(pid) for pid in pids], time.monotonic()
            machine = harness.machine_time()
            samples: list[tuple[float, harness.MachineTime]] = []
            sampling = asyncio.create_task(sample_machine(samples, stop))
            timed = stage_seconds(ports)
            sent = await offer(s, rate, seconds, seed)
            elapsed = time.monotonic() - wall
            busy = [
                (harness.cpu_seconds(pid) - c) / elapsed for pid, c in zip(pids, cpu, strict=True)
            ]
            machine = harness.machine_time() - machine
            deadline = time.monotonic() + 120
            while len(arrivals["decisions"]) < len(sent) and time.monotonic() < deadline:
                harness.check_alive(procs)
                await asyncio.sleep(0.5)
            await asyncio.sleep(1.0)
            stop.set()
            await reader
            await sampling
            stages_timed = stage_report(timed, stage_seconds(ports))
        finally:
            for p in procs:
                harness.stop(p)
    print(
        f"{guarantee}: offered {rate:,.0f} records/s for {seconds:.0f}s ({len(sent):,} records), "
        f"{'worker' if workers == 1 else f'{workers} workers'} CPU "
        f"{', '.join(f'{b:.0%}' for b in busy[:workers])} of a core while offered"
        + (f"; the local broker {busy[workers]:.0%}" if len(busy) > workers else "")
        + f"; {machine.shares()}:"
    )
    for name, got in arrivals.items():
        lat = [t - sent[w] for w, t in got.items() if w in sent]
        label = name if name.startswith("stage") else f"{name} readable"
        print(f"  {label:<29} {summary(lat)}")
    print("  by send time:")
    print("\n".join(timeline(sent, arrivals["holds"], samples)))
    print("\n".join(stages_timed))
    lost = len(sent) - len(set(arrivals["decisions"]) & set(sent))
    if lost:
        print(f"  {lost:,} records without a decision within 120 s")


async def main() -> None:
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--rates", type=float, nargs="+", default=[300, 1000, 5000])
    a.add_argument("--seconds", type=float, default=30)
    a.add_argument("--partitions", type=int, default=8)
    a.add_argument("--broker", default="127.0.0.1:9092")
    a.add_argument("--seed", type=int, default=21)
    a.add_argument("--stages", action="store_true", help="also time each stage's output")
    a.add_argument("--workers", type=int, default=1, help="workers in the group")
    a.add_argument(
        "--guarantees",
        nargs="+",
        default=["at_least_once", "exactly_once"],
        choices=["at_least_once", "exactly_once"],
    )
    args = a.parse_args()
    for rate in args.rates:
        for g in args.guarantees:
            await run(
                args.broker,
                rate,
                args.seconds,
                args.partitions,
                args.seed,
                args.stages,
                g,
                args.workers,
            )


if __name__ == "__main__":
    asyncio.run(main())
