"""Deployment configs: Kubernetes manifests, Prometheus rules, Grafana dashboard.

Offline checks, so that a broken manifest or a dashboard query on a metric that does not
exist fails here rather than in a cluster:
- every manifest in deploy/k8s validates against its schema: core kinds against the upstream
  Kubernetes JSON schemas shipped by the `kubernetes-validate` package (strict: unknown
  fields fail), custom resources against their CRDs' openAPIV3Schema (Strimzi, KEDA,
  Prometheus Operator) fetched by deploy/k8s/fetch_schemas.py into .local/schemas, with
  unknown fields refused as `kubectl apply` (strict field validation) would;
- the manifests agree with each other and with the code (topics, partitions, consumer group,
  ports, selectors, settings variables);
- the dashboard's and the rules' PromQL name only metrics that exist (streams/metrics.py,
  Faust's Prometheus sensors) or are announced below;
- promtool checks the Prometheus config and rules and runs alerts_test.yml.

A missing tool or schema cache skips locally with the command that fixes it; under CI
(CI=true) it fails instead, so a broken install step cannot hide behind a skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
PROM = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
SCHEMA_CACHE = Path(os.environ.get("PARCEL_RISK_SCHEMA_CACHE", ROOT / ".local" / "schemas"))
# Oldest and newest Kubernetes minor the manifests are checked against.
K8S_VERSIONS = ("1.30", "1.37")

# Metrics a coming change adds to streams/metrics.py, already used by the dashboard and the
# alerts: name (as defined, without _total) -> (type, label names). Once defined there, the
# definition must match what the queries assume.
ANNOUNCED_METRICS = {
    "parcel_risk_consumer_lag_records": ("gauge", {"topic", "partition"}),
    "parcel_risk_rule_reloads": ("counter", {"result"}),
    "parcel_risk_table_keys": ("gauge", {"table"}),
}
# Series Prometheus makes itself.
PROMETHEUS_SERIES = {"up"}

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (required under CI)")
    pytest.skip(reason)


# --- loading -----------------------------------------------------------------------------------


def load_all(path: Path) -> list[dict]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@cache
def manifests() -> list[tuple[str, dict]]:
    return [(p.name, doc) for p in manifest_files() for doc in load_all(p)]


def of_kind(kind: str) -> list[dict]:
    return [d for _, d in manifests() if d["kind"] == kind]


def one(kind: str) -> dict:
    found = of_kind(kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def manifest_ids() -> list[str]:
    return [f"{f}:{d['kind']}/{d['metadata']['name']}" for f, d in manifests()]


def is_core(api_version: str) -> bool:
    """Kinds served by Kubernetes itself: no group, or a *.k8s.io group, or a built-in one."""
    group = api_version.rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def core_docs() -> list[int]:
    return [i for i, (_, d) in enumerate(manifests()) if is_core(d["apiVersion"])]


def custom_docs() -> list[int]:
    return [i for i, (_, d) in enumerate(manifests()) if not is_core(d["apiVersion"])]


def worker_container() -> dict:
    (c,) = [
        c
        for c in one("Deployment")["spec"]["template"]["spec"]["containers"]
        if c["name"] == "worker"
    ]
    return c


def env_of(container: dict) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# --- (a) Kubernetes manifests: parse and validate ------------------------------------------------


def test_kustomization_lists_every_manifest_file():
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kust["kind"] == "Kustomization"
    assert sorted(kust["resources"]) == sorted(p.name for p in manifest_files())
    for _, doc in manifests():
        assert {"apiVersion", "kind", "metadata"} <= doc.keys()


@pytest.mark.parametrize("i", range(len(manifests())), ids=manifest_ids())
def test_metadata_names_and_labels_are_valid(i):
    # Schemas do not check these; the API server does (DNS-1123 names, label syntax).
    _, doc = manifests()[i]
    meta = doc["metadata"]
    assert DNS1123_SUBDOMAIN.match(meta["name"]) and len(meta["name"]) <= 253, meta["name"]
    for key, value in (meta.get("labels") or {}).items():
        assert isinstance(value, str) and len(value) <= 63 and LABEL_VALUE.match(value), (
            key,
            value,
        )


@cache
def kubernetes_validate():
    try:
        import kubernetes_validate as kv
    except ImportError:
        unavailable("kubernetes-validate is not installed (pip install -e '.[dev]')")
    return kv


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
@pytest.mark.parametrize("i", core_docs(), ids=lambda i: manifest_ids()[i])
def test_core_kinds_validate_against_kubernetes_schemas(i, k8s_version):
    _, doc = manifests()[i]
    kv = kubernetes_validate()
    kv.validate(doc, k8s_version, strict=True)  # raises on any schema violation


def test_core_validation_refuses_unknown_fields():
    """The strict schemas are really strict: a misspelt field fails."""
    kv = kubernetes_validate()
    deployment = json.loads(json.dumps(one("Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(jsonschema.ValidationError):
        kv.validate(deployment, K8S_VERSIONS[-1], strict=True)


def structural(schema: Any) -> Any:
    """A CRD's OpenAPI v3 schema as JSON Schema, refusing unknown fields.

    The API server prunes unknown fields of custom resources (kubectl apply's strict field
    validation reports them); JSON Schema would accept them silently, so every object with
    declared properties gets additionalProperties: false unless the CRD says
    x-kubernetes-preserve-unknown-fields. `nullable` becomes a null type.
    """
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in schema:
        out["properties"] = {k: structural(v) for k, v in schema["properties"].items()}
    for key in ("items", "not"):
        if isinstance(schema.get(key), dict):
            out[key] = structural(schema[key])
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = structural(schema["additionalProperties"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in schema:
            out[key] = [structural(s) for s in schema[key]]
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> JSON Schema, from every CRD in the schema cache."""
    found: dict[tuple[str, str], dict] = {}
    for path in sorted(SCHEMA_CACHE.glob("*/*.yaml")):
        for crd in load_all(path):
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for v in crd["spec"]["versions"]:
                found[(f"{group}/{v['name']}", kind)] = structural(v["schema"]["openAPIV3Schema"])
    return found


def crd_validator(doc: dict):
    schemas = crd_schemas()
    if not schemas:
        unavailable(f"no CRD schemas in {SCHEMA_CACHE}: run `python deploy/k8s/fetch_schemas.py`")
    key = (doc["apiVersion"], doc["kind"])
    assert key in schemas, (
        f"no CRD for {key} in {SCHEMA_CACHE} (served versions: "
        + ", ".join(sorted(v for v, k in schemas if k == doc["kind"]))
        + ")"
    )
    return jsonschema.Draft4Validator(schemas[key])


@pytest.mark.parametrize("i", custom_docs(), ids=lambda i: manifest_ids()[i])
def test_custom_resources_validate_against_their_crds(i):
    _, doc = manifests()[i]
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in crd_validator(doc).iter_errors(doc)
    ]
    assert not errors, "\n".join(errors)


def test_every_custom_resource_kind_is_covered():
    kinds = {d["kind"] for _, d in manifests() if not is_core(d["apiVersion"])}
    assert kinds == {
        "Kafka",
        "KafkaNodePool",
        "KafkaTopic",
        "ScaledObject",
        "ServiceMonitor",
        "PrometheusRule",
    }


def test_crd_validation_refuses_unknown_fields_and_wrong_types():
    """The CRD validation is not vacuous: a misspelt field and a wrong type both fail."""
    topic = json.loads(json.dumps(of_kind("KafkaTopic")[0]))
    topic["spec"]["partitons"] = 24
    assert not crd_validator(topic).is_valid(topic)
    scaled = json.loads(json.dumps(one("ScaledObject")))
    scaled["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 50000  # KEDA wants strings
    assert not crd_validator(scaled).is_valid(scaled)


def test_kustomize_renders_everything_into_one_namespace():
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl is not installed: kustomize build not checked")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    rendered = [d for d in yaml.safe_load_all(out) if d]
    namespace = yaml.safe_load((K8S / "kustomization.yaml").read_text())["namespace"]
    assert len(rendered) == len(manifests())
    for d in rendered:
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == namespace, d["metadata"]["name"]


# --- (a) the manifests agree with each other and with the code -----------------------------------


def faust_topics(partitions: int) -> dict[str, int]:
    """Topic -> partitions, for every topic the worker's Faust app declares."""
    import faust

    from streams import agents
    from streams.settings import Settings

    s = Settings(partitions=partitions)
    app = faust.App(s.app_id, broker="kafka://127.0.0.1:1", store="memory://", autodiscover=False)
    # the model server and the drift watch are only used while running
    tables = agents.register(app, s, None, None)
    topics = {t: a.channel.partitions for a in app.agents.values() for t in a.channel.topics}
    for table in (tables.bills, tables.consignees, tables.shippers, tables.filers):
        topics[table.changelog_topic.get_topic_name()] = table.changelog_topic.partitions
    topics[app._leader_assignor._leader_topic_name] = 1
    return topics


def kafka_topics() -> dict[str, dict]:
    return {
        t["spec"].get("topicName", t["metadata"]["name"]): t["spec"] for t in of_kind("KafkaTopic")
    }


def partitions() -> int:
    return int(env_of(worker_container())["PARCEL_RISK_PARTITIONS"])


def test_every_topic_the_code_uses_is_declared_with_its_partitions():
    from streams.settings import Settings
    from streams.topics import all_topics

    declared = kafka_topics()
    for name, config in all_topics(Settings()).items():
        assert name in declared, f"{name} has no KafkaTopic"
        for key, value in config.items():
            assert declared[name]["config"][key] == value, (name, key)
    for name, n in faust_topics(partitions()).items():
        assert name in declared, f"Faust topic {name} has no KafkaTopic"
        assert declared[name]["partitions"] == n, name


def test_co_partitioned_topics_share_the_partition_count_and_it_caps_scaling():
    declared = kafka_topics()
    n = partitions()
    single = {name for name, spec in declared.items() if spec["partitions"] == 1}
    assert single == {"models.control", "targeting.filers", "parcel-risk-__assignor-__leader"}
    assert {spec["partitions"] for name, spec in declared.items() if name not in single} == {n}
    assert n == 24
    assert one("ScaledObject")["spec"]["maxReplicaCount"] == n
    assert declared["models.control"]["config"]["cleanup.policy"] == "compact"
    assert declared["targeting.filers"]["config"]["cleanup.policy"] == "compact"


def test_kafka_is_three_brokers_kraft_with_durable_writes():
    kafka = one("Kafka")
    pools = [
        p
        for p in of_kind("KafkaNodePool")
        if p["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    ]
    assert len(pools) == len(of_kind("KafkaNodePool"))
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    controllers = sum(p["spec"]["replicas"] for p in pools if "controller" in p["spec"]["roles"])
    assert brokers == 3 and controllers == 3
    config = kafka["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == 3
    assert config["min.insync.replicas"] == 2
    for name, spec in kafka_topics().items():
        assert spec["replicas"] == 3, name
    for topic in of_kind("KafkaTopic"):
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]


def test_init_container_waits_for_exactly_the_declared_topics():
    (init,) = one("Deployment")["spec"]["template"]["spec"]["initContainers"]
    assert set(env_of(init)["WAIT_FOR_TOPICS"].split()) == set(kafka_topics())
    assert env_of(init)["PARCEL_RISK_BROKER"] == env_of(worker_container())["PARCEL_RISK_BROKER"]


def test_worker_settings_and_probes():
    from dataclasses import fields

    from streams.settings import Settings

    c = worker_container()
    env = env_of(c)
    known = {"PARCEL_RISK_" + f.name.upper() for f in fields(Settings)}
    unknown = {k for k in env if k.startswith("PARCEL_RISK_")} - known
    assert not unknown, f"not settings in streams/settings.py: {unknown}"
    assert c["command"] == ["parcel-risk", "worker"]
    kafka = one("Kafka")
    plain = next(lst for lst in kafka["spec"]["kafka"]["listeners"] if not lst["tls"])
    assert (
        env["PARCEL_RISK_BROKER"] == f"{kafka['metadata']['name']}-kafka-bootstrap:{plain['port']}"
    )
    assert env["PARCEL_RISK_WEB_HOST"] == "0.0.0.0"
    assert env["PARCEL_RISK_STORE"] == "rocksdb://"
    assert env["PARCEL_RISK_PSEUDONYM_KEY"]["secretKeyRef"]["name"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["web"] == int(env["PARCEL_RISK_WEB_PORT"])
    for probe in ("startupProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/metrics", "port": "web"}, probe
    # liveness fails when an agent has stopped, while /metrics would still answer
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "web"}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"] for v in one("Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert mounts[env["PARCEL_RISK_DATA_DIR"]] in volumes
    assert mounts[env["PARCEL_RISK_MODEL_DIR"]] in volumes


def test_scaling_monitoring_and_disruption_select_the_workers():
    deployment = one("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service, monitor, pdb = one("Service"), one("ServiceMonitor"), one("PodDisruptionBudget")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= service_ports
    assert all(e["path"] == "/metrics" for e in monitor["spec"]["endpoints"])
    # the Service's name is the job label the alerts and the dashboard select on
    assert service["metadata"]["name"] == "parcel-risk"

    scaled = one("ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == env_of(worker_container())["PARCEL_RISK_APP_ID"]
    assert meta["topic"] == "parcels.manifest"
    assert int(meta["lagThreshold"]) > 0
    namespace = yaml.safe_load((K8S / "kustomization.yaml").read_text())["namespace"]
    host = env_of(worker_container())["PARCEL_RISK_BROKER"].split(":")[0]
    assert meta["bootstrapServers"].startswith(f"{host}.{namespace}.svc:")


def test_prometheusrule_carries_the_same_rules_as_deploy_prometheus():
    groups = (
        load_all(PROM / "alerts.yml")[0]["groups"] + load_all(PROM / "recording.yml")[0]["groups"]
    )
    assert one("PrometheusRule")["spec"]["groups"] == groups


# --- (b) Grafana dashboard and PromQL metric names -----------------------------------------------


def exposed_names(family_name: str, family_type: str) -> set[str]:
    """Sample names a metric family shows on /metrics."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "info": ("_info",),
        "stateset": ("",),
        "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
        "unknown": ("",),
    }[family_type]
    return {family_name + s for s in suffixes}


@cache
def defined_metrics() -> dict[str, tuple[str, set[str]]]:
    """Family name -> (type, label names) for streams/metrics.py and Faust's sensors."""
    from faust.sensors.prometheus import FaustMetrics
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics import MetricWrapperBase

    from streams import metrics

    found: dict[str, tuple[str, set[str]]] = {}
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            for fam in obj.describe():
                found[fam.name] = (fam.type, set(obj._labelnames))
    for obj in FaustMetrics.create(CollectorRegistry(), metrics.FAUST_PREFIX):
        for fam in obj.describe():
            found[fam.name] = (fam.type, set(obj._labelnames))
    return found


@cache
def known_series() -> set[str]:
    names = set(PROMETHEUS_SERIES)
    for fam, (typ, _) in {**ANNOUNCED_METRICS, **defined_metrics()}.items():
        names |= exposed_names(fam, typ)
    return names


PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (not functions, keywords, labels or durations)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    e = re.sub(r"\$\{[^}]*\}|\$\w+", "1", e)  # Grafana variables
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # ranges, subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        word = m.group(0)
        rest = e[m.end() :].lstrip()
        if rest.startswith("(") or word.lower() in PROMQL_WORDS:
            continue
        if m.start() > 0 and (e[m.start() - 1].isdigit() or e[m.start() - 1] == "."):
            continue  # 1e3, 0.5
        names.add(word)
    return names


def test_metric_name_extraction():
    assert metric_names(
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{le=~"1|2"}[$__rate_interval])))'
        ' / on (instance) group_left (version) b_info{job="x"} offset 5m > 1e3'
        " or vector(0) and ${var}_total"
    ) == {"a_bucket", "b_info"}


def test_announced_metrics_match_their_definition_once_defined():
    defined = defined_metrics()
    for name, (typ, labels) in ANNOUNCED_METRICS.items():
        if name in defined:
            assert defined[name] == (typ, labels), (
                f"{name}: dashboard and alerts assume {typ} {labels}"
            )


@cache
def dashboard() -> dict:
    return json.loads((GRAFANA / "parcel-risk.json").read_text())


def panels() -> list[dict]:
    out = []
    for p in dashboard()["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows
    return out


def dashboard_exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels() if p["type"] != "row" for t in p["targets"]]


def test_dashboard_model_and_datasource_variable():
    d = dashboard()
    assert d["uid"] and d["title"] and 36 <= d["schemaVersion"] <= 41
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ds = {"type": "prometheus", "uid": "${datasource}"}
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels():
        if p["type"] == "row":
            continue
        assert p["datasource"] == ds, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == ds and t["expr"].strip(), p["title"]


def test_grafana_provisioning_loads_a_prometheus_and_the_dashboard_folder():
    prov = GRAFANA / "provisioning"
    (ds,) = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert ds["type"] == "prometheus" and ds["url"].startswith("http")
    (provider,) = yaml.safe_load((prov / "dashboards" / "parcel-risk.yml").read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")


def test_dashboard_panels_do_not_overlap():
    cells: dict[tuple[int, int], str] = {}
    for p in panels():
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells.get((x, y))}"
                cells[(x, y)] = p["title"]


def test_dashboard_queries_use_only_existing_metrics():
    known = known_series()
    for title, expr in dashboard_exprs():
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        assert names <= known, f"{title}: unknown metrics {names - known}"


def test_dashboard_covers_what_ops_watch():
    used = set().union(*(metric_names(e) for _, e in dashboard_exprs()))
    assert {
        "parcel_risk_decisions_total",
        "parcel_risk_records_consumed_total",
        "parcel_risk_end_to_end_latency_seconds_bucket",
        "parcel_risk_consumer_lag_records",
        "parcel_risk_holds_total",
        "parcel_risk_dead_letters_total",
        "parcel_risk_model_info",
        "parcel_risk_scoring_seconds_bucket",
        "parcel_risk_batch_size_records_bucket",
    } <= used


def rules(path: Path) -> list[dict]:
    return [r for g in load_all(path)[0]["groups"] for r in g["rules"]]


def test_alert_and_recording_rules_use_only_existing_metrics():
    recorded = {r["record"] for r in rules(PROM / "recording.yml")}
    known = known_series() | recorded
    for path in (PROM / "alerts.yml", PROM / "recording.yml"):
        for r in rules(path):
            names = metric_names(r["expr"])
            assert names and names <= known, f"{r.get('alert') or r['record']}: {names - known}"


def test_alerts_have_severity_and_instructions():
    alerts = rules(PROM / "alerts.yml")
    assert {
        "ParcelRiskConsumerLagGrowing",
        "ParcelRiskDeadLetterRateHigh",
        "ParcelRiskNoDecisions",
        "ParcelRiskModelLoadFailed",
        "ParcelRiskEndToEndLatencyHigh",
    } <= {a["alert"] for a in alerts}
    for a in alerts:
        assert a["labels"]["severity"] in {"critical", "warning"}, a["alert"]
        assert a["annotations"]["summary"] and len(a["annotations"]["description"]) > 80, a["alert"]


# --- (c) promtool --------------------------------------------------------------------------------


def promtool(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess:
    tool = shutil.which("promtool")
    if not tool:
        unavailable("promtool is not installed (Debian package `prometheus`)")
    res = subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def test_promtool_check_config():
    promtool("check", "config", "prometheus.yml")


def test_promtool_check_rules():
    promtool("check", "rules", "alerts.yml", "recording.yml")


def test_promtool_alert_unit_tests():
    out = promtool("test", "rules", "alerts_test.yml")
    assert "SUCCESS" in out.stdout


def test_promtool_parses_dashboard_queries(tmp_path):
    # Each panel query as a recording rule, Grafana's variables replaced by plain values, so
    # promtool's parser checks the PromQL.
    def plain(expr: str) -> str:
        expr = expr.replace("$__rate_interval", "1m").replace("$__range", "1h")
        return re.sub(r"\$\{?\w+\}?", ".*", expr)

    group = {
        "name": "dashboard",
        "rules": [
            {"record": f"dashboard:query_{i}", "expr": plain(e)}
            for i, (_, e) in enumerate(dashboard_exprs())
        ],
    }
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump({"groups": [group]}))
    promtool("check", "rules", "dashboard.yml", cwd=tmp_path)
