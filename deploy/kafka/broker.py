#!/usr/bin/env python3
"""Local single-node Apache Kafka (KRaft) built from Maven Central jars.

Stdlib only, so `make`, the test fixtures and the benchmarks can all drive the same broker
before or without the virtualenv. Usage:

    python deploy/kafka/broker.py fetch|start|stop|status|wait [--port 9092]
        [--ssl-port N] [--sasl-ssl-port N]

start and wait wait KAFKA_START_WAIT_S (90) seconds for the broker to serve.

State (data, logs, pid) lives in .local/kafka-<port>/ in the checkout (git-ignored).
With --ssl-port / --sasl-ssl-port the broker also listens with TLS (a local CA and broker
keystore made by the JDK's keytool, in the state dir's tls/; clients trust tls/ca.pem) and
with SASL/SCRAM-SHA-512 over TLS for the user SCRAM_USER (password SCRAM_PASSWORD).
`start` reuses a broker that already answers on the port; `stop` stops only the broker this
checkout started, by its pid.
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
LIBS = HERE / "target" / "libs"
HOST = "127.0.0.1"


# local, throwaway credentials for the TLS and SCRAM listeners of a development broker
TLS_PASSWORD = "local-tls-secret"
SCRAM_USER = "parcel-risk"
SCRAM_PASSWORD = "local-scram-secret"


def state_dir(port: int) -> Path:
    return ROOT / ".local" / f"kafka-{port}"


def fetch() -> None:
    """Fetch the broker's runtime jars once (Maven caches them in ~/.m2 as well)."""
    if any(LIBS.glob("kafka_2.13-*.jar")):
        return
    print("fetching Apache Kafka from Maven Central ...", flush=True)
    subprocess.run(
        ["mvn", "-B", "-q", "-f", str(HERE / "pom.xml"), "dependency:copy-dependencies"],
        check=True,
    )


def _metadata_request(port: int, timeout: float = 2.0) -> tuple[int, int]:
    """Send a Kafka Metadata v0 request for all topics.

    Returns (brokers, partitions without a leader). A raw request, so waiting needs no
    client library. Right after a restart the broker answers before it has loaded the
    leadership of existing partitions, and clients that start then can get stuck on
    NotLeaderForPartition; so ready means at least one broker and no leaderless partition.
    """
    client_id = b"parcel-risk-wait"
    body = struct.pack(">hhih", 3, 0, 1, len(client_id)) + client_id + struct.pack(">i", 0)
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        header = _recv_exact(s, 4)
        (size,) = struct.unpack(">i", header)
        payload = _recv_exact(s, size)
    r = _Reader(payload)
    r.int32()  # correlation id
    n_brokers = r.int32()
    for _ in range(n_brokers):
        r.int32(), r.string(), r.int32()  # node id, host, port
    leaderless = 0
    for _ in range(r.int32()):  # topics
        topic_error = r.int16()
        r.string()
        for _ in range(r.int32()):  # partitions
            error, _pid, leader = r.int16(), r.int32(), r.int32()
            r.array_int32(), r.array_int32()  # replicas, isr
            leaderless += int(error != 0 or leader < 0 or topic_error != 0)
    return n_brokers, leaderless


class _Reader:
    """Big-endian reader for the few Kafka protocol types a Metadata v0 answer uses."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def _take(self, fmt: str) -> int:
        (v,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(v)

    def int16(self) -> int:
        return self._take(">h")

    def int32(self) -> int:
        return self._take(">i")

    def string(self) -> str:
        n = self.int16()
        text = self.data[self.pos : self.pos + max(n, 0)].decode()
        self.pos += max(n, 0)
        return text

    def array_int32(self) -> list[int]:
        return [self.int32() for _ in range(self.int32())]


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def answers(port: int) -> bool:
    """The broker serves clients: it is up and every partition has a leader."""
    try:
        brokers, leaderless = _metadata_request(port)
    except (OSError, struct.error):
        return False
    return brokers > 0 and leaderless == 0


def start_wait_s() -> float:
    """How long start and wait wait for the broker to serve (KAFKA_START_WAIT_S)."""
    return float(os.environ.get("KAFKA_START_WAIT_S", "90"))


def wait(port: int, timeout: float | None = None) -> None:
    timeout = start_wait_s() if timeout is None else timeout
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers(port):
            return
        time.sleep(0.3)
    raise TimeoutError(not_up(port, timeout))


def partition_dirs(port: int) -> tuple[int, float]:
    """(partition directories, their size in GiB) in the broker's state dir: each is a
    partition the broker loads at start, so thousands of them make it slow to answer."""
    data = state_dir(port) / "data"
    dirs = [
        p
        for p in (data.iterdir() if data.is_dir() else ())
        if p.is_dir() and p.name.rpartition("-")[2].isdigit() and not p.name.startswith("__")
    ]
    size = sum(f.stat().st_size for d in dirs for f in d.iterdir() if f.is_file())
    return len(dirs), size / 2**30


def not_up(port: int, timeout: float) -> str:
    """Why a broker did not answer in time, with what its state dir holds."""
    n, gib = partition_dirs(port)
    said = f"Kafka on {HOST}:{port} did not answer within {timeout:.0f}s"
    if n < 1000:
        return f"{said} ({n} partition directories in {state_dir(port) / 'data'})"
    return (
        f"{said}: its state dir {state_dir(port) / 'data'} holds {n:,} partition directories "
        f"({gib:.1f} GiB), which the broker loads before it answers; it may just be slow. "
        "Give it longer (KAFKA_START_WAIT_S=600), then delete what test runs left on it "
        "(python -m tests.leftovers --delete), or, for a throwaway broker, its state dir"
    )


def our_pid(port: int) -> int | None:
    """The pid of the broker this checkout started on `port`, while it runs."""
    pidfile = state_dir(port) / "broker.pid"
    try:
        pid = int(pidfile.read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def _keytool(*args: str) -> None:
    subprocess.run(
        ["keytool", *args, "-storepass", TLS_PASSWORD, "-storetype", "PKCS12"],
        check=True,
        capture_output=True,
    )


def tls_material(d: Path) -> Path:
    """A local CA and a broker keystore signed by it (keytool); returns the tls/ folder.

    The broker's certificate names 127.0.0.1 and localhost, so clients verify host names.
    """
    tls = d / "tls"
    if (tls / "broker.p12").exists():
        return tls
    tls.mkdir(parents=True, exist_ok=True)
    ca, broker = str(tls / "ca.p12"), str(tls / "broker.p12")
    key = ["-keyalg", "RSA", "-keysize", "2048", "-validity", "30"]
    _keytool(
        "-genkeypair",
        "-alias",
        "ca",
        "-dname",
        "CN=parcel-risk local CA",
        *key,
        "-ext",
        "bc:c",
        "-keystore",
        ca,
    )
    _keytool("-exportcert", "-alias", "ca", "-rfc", "-file", str(tls / "ca.pem"), "-keystore", ca)
    _keytool("-genkeypair", "-alias", "broker", "-dname", f"CN={HOST}", *key, "-keystore", broker)
    _keytool("-certreq", "-alias", "broker", "-file", str(tls / "broker.csr"), "-keystore", broker)
    _keytool(
        "-gencert",
        "-alias",
        "ca",
        "-infile",
        str(tls / "broker.csr"),
        "-rfc",
        "-outfile",
        str(tls / "broker.pem"),
        "-validity",
        "30",
        "-ext",
        f"SAN=ip:{HOST},dns:localhost",
        "-ext",
        "eku=serverAuth",
        "-keystore",
        ca,
    )
    _keytool(
        "-importcert",
        "-alias",
        "ca",
        "-file",
        str(tls / "ca.pem"),
        "-noprompt",
        "-keystore",
        broker,
    )
    _keytool(
        "-importcert", "-alias", "broker", "-file", str(tls / "broker.pem"), "-keystore", broker
    )
    return tls


def _secure_listeners(d: Path, port: int, controller_port: int, ssl: int, sasl: int) -> str:
    """Properties that add TLS (and SASL/SCRAM over TLS) listeners; they override the
    template's listener lines (in a properties file the last value of a key wins)."""
    tls = tls_material(d)
    names = {"SSL": ssl, "SASL_SSL": sasl}
    extra = [f"{name}://{HOST}:{p}" for name, p in names.items() if p]
    return "\n".join(
        [
            "",
            "# TLS listeners (broker.py --ssl-port / --sasl-ssl-port)",
            f"listeners=PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port},"
            + ",".join(extra),
            f"advertised.listeners=PLAINTEXT://{HOST}:{port}," + ",".join(extra),
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
            "SSL:SSL,SASL_SSL:SASL_SSL",
            f"ssl.keystore.location={tls / 'broker.p12'}",
            "ssl.keystore.type=PKCS12",
            f"ssl.keystore.password={TLS_PASSWORD}",
            f"ssl.key.password={TLS_PASSWORD}",
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "",
        ]
    )


def _write_config(port: int, controller_port: int, ssl: int = 0, sasl: int = 0) -> Path:
    d = state_dir(port)
    (d / "data").mkdir(parents=True, exist_ok=True)
    (d / "logs").mkdir(parents=True, exist_ok=True)
    template = (HERE / "server.properties").read_text()
    conf = template.format(
        host=HOST, port=port, controller_port=controller_port, data_dir=d / "data"
    )
    if ssl or sasl:
        conf += _secure_listeners(d, port, controller_port, ssl, sasl)
    path = d / "server.properties"
    path.write_text(conf)
    return path


def _java(main: str, *args: str, port: int) -> list[str]:
    d = state_dir(port)
    heap = os.environ.get("KAFKA_HEAP_OPTS", "-Xms256m -Xmx1g").split()
    return [
        os.environ.get("JAVA", "java"),
        *heap,
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{HERE / 'log4j.properties'}",
        f"-Dkafka.logs.dir={d / 'logs'}",
        "-cp",
        str(LIBS / "*"),
        main,
        *args,
    ]


def start(port: int, controller_port: int, ssl: int = 0, sasl: int = 0) -> None:
    """Start the broker unless one already answers on the port; wait until it serves."""
    if answers(port):
        print(f"Kafka already up on {HOST}:{port} (reused)")
        return
    if our_pid(port) is not None:  # started by us but still booting
        try:
            wait(port)
        except TimeoutError as e:
            sys.exit(f"Kafka (pid {our_pid(port)}) is still not serving: {e}")
        return
    fetch()
    conf = _write_config(port, controller_port, ssl, sasl)
    d = state_dir(port)
    if not (d / "data" / "meta.properties").exists():
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        subprocess.run(
            _java(
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={cid}",  # one '=' word: an id may start with '-'
                "-c",
                str(conf),
                "--ignore-formatted",
                # the SCRAM user lives in the cluster metadata, written at format time
                "--add-scram",
                f"SCRAM-SHA-512=[name={SCRAM_USER},password={SCRAM_PASSWORD}]",
                port=port,
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    out = open(d / "logs" / "server.out", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        _java("kafka.Kafka", str(conf), port=port),
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C in a terminal goes to us, not straight to the JVM
    )
    (d / "broker.pid").write_text(str(proc.pid))
    try:
        wait(port)
    except TimeoutError as e:
        tail = (d / "logs" / "server.out").read_text(errors="replace")[-3000:]
        stop(port)
        sys.exit(f"Kafka did not start; last log lines:\n{tail}\n{e}")
    print(f"Kafka up on {HOST}:{port} (pid {proc.pid}, state in {d})")


def stop(port: int, timeout: float = 30.0) -> None:
    """Stop the broker this checkout started (by its pid): TERM, then KILL."""
    pid = our_pid(port)
    if pid is None:
        print(f"no broker of ours on port {port}")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.2)
    else:
        os.kill(pid, signal.SIGKILL)
    (state_dir(port) / "broker.pid").unlink(missing_ok=True)
    print(f"Kafka stopped (pid {pid})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=["fetch", "start", "stop", "status", "wait"])
    p.add_argument("--port", type=int, default=int(os.environ.get("KAFKA_PORT", "9092")))
    p.add_argument("--controller-port", type=int, default=None)
    p.add_argument("--ssl-port", type=int, default=0, help="also listen with TLS here")
    p.add_argument("--sasl-ssl-port", type=int, default=0, help="and SASL/SCRAM over TLS here")
    a = p.parse_args()
    cport = a.controller_port or a.port + 1
    if a.action == "fetch":
        fetch()
    elif a.action == "start":
        start(a.port, cport, a.ssl_port, a.sasl_ssl_port)
    elif a.action == "stop":
        stop(a.port)
    elif a.action == "wait":
        try:
            wait(a.port)
        except TimeoutError as e:
            sys.exit(str(e))
    else:
        up = answers(a.port)
        print(f"Kafka on {HOST}:{a.port}: {'up' if up else 'down'} (our pid: {our_pid(a.port)})")
        sys.exit(0 if up else 1)


if __name__ == "__main__":
    main()
