"""What every benchmark needs: worker processes, the real broker's offsets, and resources.

Throughput is read from the output topic itself: the number of messages over the span
between the first and the last message's CreateTime (stamped by the producing client when
it sent them), start-up excluded. The baselines' messages are counted by end offsets; the
worker's are read back as a read-committed reader gets them (`read_times`), because under
exactly-once the end offsets also number transaction markers.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code
from aiokafka.protocol.admin import DeleteGroupsRequest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from streams.security import connection, reader
from streams.settings import ROOT, Settings, to_env

T = TypeVar("T")


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


@dataclass(frozen=True)
class MachineTime:
    """CPU seconds of the whole machine, all cores (/proc/stat): busy (here, or taken by
    the hypervisor for other guests), stolen (the part the hypervisor took) and in all.

    On a shared virtual machine a process can wait for a core while its own CPU time
    stands still: steal is that wait, and the benchmarks print it beside their figures."""

    busy: float
    stolen: float
    total: float

    def __sub__(self, before: MachineTime) -> MachineTime:
        return MachineTime(
            self.busy - before.busy, self.stolen - before.stolen, self.total - before.total
        )

    def shares(self) -> str:
        """This span's busy and stolen shares, for a benchmark's report."""
        total = max(self.total, 1e-9)
        return (
            f"the machine {self.busy / total:.0%} of {os.cpu_count()} cores busy, "
            f"{self.stolen / total:.0%} stolen by the hypervisor"
        )


def machine_time() -> MachineTime:
    """The machine's CPU time so far (/proc/stat's first line: user, nice, system, idle,
    iowait, irq, softirq, steal; guest time is already in user)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    total = sum(fields[:8]) / tick
    idle = (fields[3] + fields[4]) / tick
    return MachineTime(busy=total - idle, stolen=fields[7] / tick, total=total)


def broker_script() -> Any:
    """deploy/kafka/broker.py as a module (it is a script, not part of a package)."""
    spec = importlib.util.spec_from_file_location("broker", ROOT / "deploy" / "kafka" / "broker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def broker_pid(bootstrap: str) -> int | None:
    """The pid of the local broker this checkout started on that port, if any."""
    pid: int | None = broker_script().our_pid(int(bootstrap.rsplit(":", 1)[-1]))
    return pid


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


def check_alive(workers: Sequence[subprocess.Popen[bytes]]) -> None:
    """Raise if a worker this run started has exited: a run never waits on a dead worker."""
    for w in workers:
        if w.poll() is not None:
            raise RuntimeError(f"worker pid {w.pid} exited with status {w.returncode}")


async def while_alive(task: asyncio.Task[T], workers: Sequence[subprocess.Popen[bytes]]) -> T:
    """`task`'s result, cancelled as soon as one of `workers` has exited."""
    try:
        while not task.done():
            check_alive(workers)
            await asyncio.wait({task}, timeout=1.0)
    finally:
        task.cancel()
    return task.result()


async def wait_for_count(
    s: Settings,
    topic: str,
    n: int,
    timeout: float,
    stall_s: float = 120.0,
    workers: Sequence[subprocess.Popen[bytes]] = (),
) -> int:
    """Poll until `topic` holds n messages; give up after `timeout` or `stall_s` without
    growth, or as soon as one of `workers` has exited."""
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        check_alive(workers)
        got = await count(s, topic)
        if got >= n:
            return got
        if got != last:
            last, last_change = got, time.monotonic()
        elif time.monotonic() - last_change > stall_s:
            break
        await asyncio.sleep(1.0)
    raise TimeoutError(f"{topic}: {last:,} of {n:,} messages")


async def read_times(
    s: Settings, topic: str, n: int, timeout: float, stall_s: float = 120.0
) -> list[float]:
    """CreateTimes (epoch seconds) of the first n messages a read-committed reader gets from
    `topic`, read as they come: under exactly-once, end offsets also count transaction
    markers, and aborted messages are not output."""
    c = AIOKafkaConsumer(**reader(s), group_id=None, enable_auto_commit=False)
    await c.start()
    try:
        tps = await _partitions(c, [topic])
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        got: list[float] = []
        deadline = time.monotonic() + timeout
        last_change = time.monotonic()
        while len(got) < n:
            batch = await c.getmany(timeout_ms=1000)
            for msgs in batch.values():
                got.extend(m.timestamp / 1000 for m in msgs)
            now = time.monotonic()
            if batch:
                last_change = now
            elif now - last_change > stall_s or now > deadline:
                raise TimeoutError(f"{topic}: {len(got):,} of {n:,} messages")
        return got
    finally:
        await c.stop()


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


def metric_samples(port: int) -> list[Sample]:
    """Every sample on a worker's /metrics; OSError while its web server is not up."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def sample_sum(samples: list[Sample], name: str, labels: dict[str, str] | None = None) -> float:
    """The samples of `name` with these labels, summed over their other labels; 0 if none."""
    return sum(
        sample.value
        for sample in samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items())
    )


def metric_value(port: int, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample (summed over other labels) from a worker's /metrics, 0 if absent; OSError
    while the worker's web server is not up."""
    return sample_sum(metric_samples(port), name, labels)


def assigned(port: int, topic: str) -> float:
    """Partitions of `topic` a worker owns (0 if it is not up yet)."""
    try:
        return metric_value(port, "parcel_risk_assigned_partitions", {"topic": topic})
    except OSError:
        return 0.0


async def wait_assigned(
    topic: str, ports: Sequence[int], workers: Sequence[subprocess.Popen[bytes]], timeout: float
) -> None:
    """Until each worker (by its web port) owns partitions of `topic`; fails after `timeout`,
    or as soon as one of `workers` has exited."""
    deadline = time.monotonic() + timeout
    while not all(assigned(port, topic) for port in ports):
        if time.monotonic() > deadline:
            raise TimeoutError("workers did not all get partitions")
        check_alive(workers)
        await asyncio.sleep(0.5)


async def rate(s: Settings, topic: str) -> tuple[int, float]:
    """(messages, messages per second) of what is on `topic`."""
    n = await count(s, topic)
    first, last = await times(s, topic)
    return n, n / max(last - first, 1e-6)


# A run of its own on a shared broker (a test, a benchmark) names everything it makes
# after one fresh tag: its topics start with the prefix, and Faust's changelog,
# repartition and assignor topics and its consumer groups carry the app id. remove_run
# deletes them all, so runs do not pile partitions up on the user's broker (13,696
# partition directories, 4.3 GiB, once: the broker no longer started within its wait).
RUN_TAG_HEX = 8


def own_run(base: Settings, kind: str, app: str) -> Settings:
    """`base` with topic prefix `{kind}{tag}.` and app id `{app}-{tag}` (a fresh tag)."""
    tag = uuid.uuid4().hex[:RUN_TAG_HEX]
    return base.with_(topic_prefix=f"{kind}{tag}.", app_id=f"{app}-{tag}")


def _check_own(s: Settings) -> None:
    if not s.topic_prefix or s.app_id == Settings().app_id:
        raise ValueError(
            f"not a run of its own (prefix {s.topic_prefix!r}, app id {s.app_id!r}): "
            "its topics could be the user's"
        )


def is_of_run(s: Settings, name: str) -> bool:
    """A topic or consumer group this run made (own_run's naming)."""
    return name.startswith(s.topic_prefix) or s.app_id in name


async def leftovers(s: Settings) -> tuple[list[str], list[str]]:
    """(topics, consumer groups) of this run that the broker still has."""
    _check_own(s)
    admin = AIOKafkaAdminClient(**connection(s), request_timeout_ms=15_000)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if is_of_run(s, t)]
        groups = [g[0] for g in await admin.list_consumer_groups() if is_of_run(s, g[0])]
    finally:
        await admin.close()
    return sorted(topics), sorted(groups)


@asynccontextmanager
async def work_dir(s: Settings) -> AsyncIterator[Path]:
    """The run's own directory, `.local/<app id>` (worker logs, local stores). At the end,
    the run's topics and groups leave the shared broker (`remove_run`), and the directory
    goes too, unless the run failed: then it stays, named, for its logs."""
    work = ROOT / ".local" / s.app_id
    work.mkdir(parents=True)
    try:
        yield work
    except BaseException:
        print(f"the run failed: its logs and stores are kept in {work}", file=sys.stderr)
        raise
    else:
        shutil.rmtree(work)
    finally:
        await remove_run(s)


async def remove_run(s: Settings, timeout_s: float = 60.0) -> None:
    """Delete every topic and consumer group of this run (after its processes stopped:
    a worker still running would write to its changelogs and recreate them, the broker
    creating topics on use). Raises TimeoutError naming what is left."""
    _check_own(s)
    admin = AIOKafkaAdminClient(**connection(s), request_timeout_ms=15_000)
    await admin.start()
    deadline = time.monotonic() + timeout_s
    topics: list[str] = []
    groups: list[str] = []
    try:
        while True:
            topics = [t for t in await admin.list_topics() if is_of_run(s, t)]
            groups = [g[0] for g in await admin.list_consumer_groups() if is_of_run(s, g[0])]
            if not topics and not groups:
                return
            if time.monotonic() > deadline:
                break
            if topics:
                await admin.delete_topics(topics, timeout_ms=15_000)
            for group in groups:
                await delete_group(admin, group)
            await asyncio.sleep(0.5)  # deletion completes after the answer
    finally:
        await admin.close()
    raise TimeoutError(
        f"run {s.app_id}: still on the broker after {timeout_s:.0f}s: "
        f"topics {topics}, groups {groups}"
    )


async def delete_group(admin: AIOKafkaAdminClient, group: str) -> None:
    """DeleteGroups at the group's coordinator (aiokafka's admin has no call for it). A
    group with members left (a killed worker, until its session times out) is retried by
    the caller."""
    coordinator = await admin.find_coordinator(group)
    response = await admin._send_request(DeleteGroupsRequest([group]), coordinator)
    for _group, code in response.results:
        if code not in (0, 68, 69):  # ok, NON_EMPTY_GROUP (retried), GROUP_ID_NOT_FOUND
            raise for_code(code)(f"deleting consumer group {group}")
