"""What every benchmark needs: worker processes, the real broker's offsets, and resources.

Throughput is read from the output topic itself: the number of messages (end offsets)
over the span between the first and the last message's CreateTime (stamped by the
producing client when it sent them). Every system under test is measured the same way,
start-up excluded, and nothing has to read millions of messages back.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from streams.settings import ROOT, Settings, to_env


def free_port() -> int:
    """A port nobody listens on: benchmarks may run side by side."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_worker(
    s: Settings, log: Path, web_port: int | None = None, module: str = "streams.cli", **env: str
) -> subprocess.Popen[bytes]:
    """A worker subprocess (`module` worker) for these settings, in its own session."""
    environ = {
        **os.environ,
        **to_env(s),
        "PARCEL_RISK_WEB_PORT": str(web_port or free_port()),
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", module, "worker"],
        env=environ,
        cwd=ROOT,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Stop a process this benchmark started, by its pid: TERM, then KILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def du_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


async def _consumer(s: Settings) -> AIOKafkaConsumer:
    c = AIOKafkaConsumer(bootstrap_servers=s.bootstrap, group_id=None, enable_auto_commit=False)
    await c.start()
    return c


async def _partitions(c: AIOKafkaConsumer, topics: Sequence[str]) -> list[TopicPartition]:
    tps: list[TopicPartition] = []
    for t in topics:
        parts = c.partitions_for_topic(t)
        if parts is None:
            await c._client.force_metadata_update()  # a topic created moments ago
            parts = c.partitions_for_topic(t) or set()
        tps.extend(TopicPartition(t, p) for p in sorted(parts))
    return tps


async def count(s: Settings, *topics: str) -> int:
    """Messages on these topics (sum of end offsets; the topics are never compacted)."""
    c = await _consumer(s)
    try:
        tps = await _partitions(c, topics)
        return sum((await c.end_offsets(tps)).values()) if tps else 0
    finally:
        await c.stop()


async def wait_for_count(
    s: Settings, topic: str, n: int, timeout: float, stall_s: float = 120.0
) -> int:
    """Poll until `topic` holds n messages; give up after `timeout` or `stall_s` without growth."""
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        got = await count(s, topic)
        if got >= n:
            return got
        if got != last:
            last, last_change = got, time.monotonic()
        elif time.monotonic() - last_change > stall_s:
            break
        await asyncio.sleep(1.0)
    raise TimeoutError(f"{topic}: {last:,} of {n:,} messages")


async def times(s: Settings, topic: str) -> tuple[float, float]:
    """CreateTimes (epoch seconds) of the first and the last message on `topic`."""
    c = await _consumer(s)
    try:
        tps = await _partitions(c, [topic])
        ends = await c.end_offsets(tps)
        firsts: list[float] = []
        lasts: list[float] = []
        for tp in tps:
            if not ends[tp]:
                continue
            for offset, into in ((0, firsts), (ends[tp] - 1, lasts)):
                c.assign([tp])
                c.seek(tp, offset)
                msg = await c.getone()
                into.append(msg.timestamp / 1000)
        return min(firsts), max(lasts)
    finally:
        await c.stop()


def metric_value(port: int, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample (summed over other labels) from a worker's /metrics, 0 if absent; OSError
    while the worker's web server is not up."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(
                sample.labels.get(k) == v for k, v in (labels or {}).items()
            ):
                total += sample.value
    return total


def assigned(port: int, topic: str) -> float:
    """Partitions of `topic` a worker owns (0 if it is not up yet)."""
    try:
        return metric_value(port, "parcel_risk_assigned_partitions", {"topic": topic})
    except OSError:
        return 0.0


async def rate(s: Settings, topic: str) -> tuple[int, float]:
    """(messages, messages per second) of what is on `topic`."""
    n = await count(s, topic)
    first, last = await times(s, topic)
    return n, n / max(last - first, 1e-6)
