"""The worker as deploy/k8s runs it: the installed package (no source tree beside it) with
the Deployment's own environment, on a broker of the test's own.

Only what cannot be the same here is replaced: the broker address, the volume paths, the
secret's value, the web port (the manifest's 6066 may be taken on a shared machine) and
Faust's TOPIC_REPLICATION_FACTOR (3 brokers there, 1 here). The app id, partition count,
web host, store and log level are the manifest's. Before issue 14 this worker stopped at
start twice over: metric names colliding under the default app id, and the rules file
looked for in the source tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
import yaml

from models.synthetic import GeneratorConfig, TrafficGenerator
from streams.feed import produce_events
from streams.settings import Settings
from tests.conftest import Broker, eventually, free_port, read_all
from tests.unit.test_default_paths import installed_copy
from tests.unit.test_deploy_configs import K8S, env_of, worker_container

pytestmark = pytest.mark.integration


def listening(pid: int) -> set[tuple[str, int]]:
    """The (address, port) pairs a process listens on (its own sockets, IPv4 and IPv6)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # LISTEN
                address, port = cols[1].split(":")
                raw = bytes.fromhex(address)
                if table == "tcp":
                    ip = str(ipaddress.IPv4Address(raw[::-1]))
                else:  # four little-endian 32-bit words
                    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                    ip = str(ipaddress.IPv6Address(words))
                found.add((ip, int(port, 16)))
    return found


def status(url: str) -> int:
    """The HTTP status of a GET (an error status is an answer too)."""
    try:
        return urllib.request.urlopen(url, timeout=5).status
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_the_installed_worker_runs_with_the_deployments_environment(
    own_broker: Broker, model_dir: Path, tmp_path: Path
) -> None:
    site = installed_copy(tmp_path)
    models = tmp_path / "models"
    shutil.copytree(model_dir, models)
    rules = tmp_path / "etc" / "parcel-risk" / "rules.toml"
    rules.parent.mkdir(parents=True)
    configmap = yaml.safe_load((K8S / "rules-configmap.yaml").read_text())
    rules.write_text(configmap["data"]["rules.toml"])
    manifest = env_of(worker_container())
    port = free_port()
    env = {k: str(v) for k, v in manifest.items() if isinstance(v, str)}
    # the volumes' paths, mapped into tmp_path: only those the manifest sets (a setting it
    # misses keeps its default, as in the pod)
    volumes = {
        "PARCEL_RISK_DATA_DIR": tmp_path / "data",
        "PARCEL_RISK_MODEL_DIR": models,
        "PARCEL_RISK_RULES": rules,
    }
    env.update({k: str(path) for k, path in volumes.items() if k in manifest})
    env.update(
        PARCEL_RISK_BROKER=f"127.0.0.1:{own_broker.port}",
        PARCEL_RISK_PSEUDONYM_KEY="a-secret-from-the-test",
        PARCEL_RISK_WEB_PORT=str(port),
        TOPIC_REPLICATION_FACTOR="1",
        HOME=str(tmp_path / "home"),
    )
    assert set(env) == set(manifest)
    (tmp_path / "home").mkdir()
    (tmp_path / "cwd").mkdir()
    log = tmp_path / "worker.log"
    worker = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker"],  # the image's `parcel-risk worker`
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(site), **env},
        cwd=tmp_path / "cwd",
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        s = Settings(
            broker=f"127.0.0.1:{own_broker.port}",
            app_id=manifest["PARCEL_RISK_APP_ID"],
            partitions=int(manifest["PARCEL_RISK_PARTITIONS"]),
        )

        def metrics() -> str:
            url = f"http://127.0.0.1:{port}/metrics"
            return urllib.request.urlopen(url, timeout=5).read().decode()

        def up() -> bool:
            assert worker.poll() is None, log.read_text(errors="replace")[-5000:]
            return "parcel_risk_" in metrics()

        assert await eventually(up, timeout=180), log.read_text(errors="replace")[-5000:]
        # the pod listens on every interface (probes, Prometheus), with /metrics only
        assert ("0.0.0.0", port) in listening(worker.pid)
        assert status(f"http://127.0.0.1:{port}/table/") == 404
        assert status(f"http://127.0.0.1:{port}/router/") == 404
        events = list(TrafficGenerator(GeneratorConfig(seed=23)).events(300))
        await produce_events(s, events)
        manifests = {e.key for e in events if e.kind == "manifest" and e.bad_reason is None}

        def decided(got: list[tuple[bytes, bytes]]) -> bool:
            assert worker.poll() is None, log.read_text(errors="replace")[-5000:]
            return manifests <= {orjson.loads(v)["hawb"] for _k, v in got}

        got = await read_all(s, "decisions_topic", timeout=180, until=decided)
        assert manifests <= {orjson.loads(v)["hawb"] for _k, v in got}
        text = await asyncio.to_thread(metrics)
        assert "faust_" in text and "parcel_risk_decisions_total" in text
        assert "Traceback" not in log.read_text(errors="replace")
    finally:
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(worker.pid, signal.SIGKILL)
                worker.wait()
