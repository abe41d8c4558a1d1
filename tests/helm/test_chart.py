"""The Helm chart rendered with Helm's own library, every object validated against the
Kubernetes schemas, for the defaults and each shipped GPU card's values file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from deepinfra_serve.config.cards import load_card

from ..helpers import CHART, KUBE_VERSION, ROOT, render

CARD_VALUES = sorted((ROOT / "helm").glob("values-*.yaml"))
GPU_CARDS = sorted((ROOT / "model_cards").glob("*.yaml"))  # dev/ holds the CPU cards


def kind(docs: list[dict[str, Any]], k: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == k]
    return doc


def values_of(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


CASES = [("defaults", {})] + [(p.stem, values_of(p)) for p in CARD_VALUES]


def test_one_values_file_per_shipped_gpu_card() -> None:
    assert {p.stem.removeprefix("values-") for p in CARD_VALUES} == {p.stem for p in GPU_CARDS}
    for path in CARD_VALUES:
        assert values_of(path)["modelCard"] == path.name.removeprefix("values-")


@pytest.mark.parametrize(("label", "values"), CASES, ids=[c[0] for c in CASES])
def test_every_object_is_valid_kubernetes(label: str, values: dict[str, Any]) -> None:
    docs = render(values)
    assert {d["kind"] for d in docs} >= {
        "ConfigMap",
        "Deployment",
        "Service",
        "PersistentVolumeClaim",
    }
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


@pytest.mark.parametrize(("label", "values"), CASES, ids=[c[0] for c in CASES])
def test_gpus_probes_card_and_security_follow_the_card(label: str, values: dict[str, Any]) -> None:
    card_file = ROOT / "model_cards" / (values.get("modelCard") or "mythomax-l2-13b-turbo.yaml")
    card = load_card(card_file)
    docs = render(values)
    config_map = kind(docs, "ConfigMap")
    # The card is mounted as it is in the repository: one source of truth.
    assert config_map["data"]["card.yaml"].strip() == card_file.read_text().strip()
    pod = kind(docs, "Deployment")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    gpus = card.engine.tensor_parallel_size
    assert container["resources"]["requests"]["nvidia.com/gpu"] == gpus
    assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/health/ready"
    # Loading a 70B model takes minutes: at least 20 minutes of start-up budget.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 1200
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["card"]["mountPath"] == "/etc/deepinfra-serve/card.yaml"
    assert mounts["dshm"]["mountPath"] == "/dev/shm"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert volumes["card"]["configMap"]["name"] == config_map["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["securityContext"]["privileged"] is False
    assert pod["nodeSelector"] and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    env = {e["name"]: e for e in container["env"]}
    assert env["DEEPINFRA_SERVE_CARD"]["value"] == "/etc/deepinfra-serve/card.yaml"
    assert env["DEEPINFRA_SERVE_DEVICE"]["value"] == "cuda"
    assert pod["terminationGracePeriodSeconds"] > float(
        env["DEEPINFRA_SERVE_SHUTDOWN_GRACE_S"]["value"]
    )
    # Webhooks' last attempts (5 s) after the drain fit the termination grace too.
    assert pod["terminationGracePeriodSeconds"] >= (
        float(env["DEEPINFRA_SERVE_SHUTDOWN_GRACE_S"]["value"]) + 5
    )
    assert float(env["DEEPINFRA_SERVE_ENGINE_STALL_TIMEOUT_S"]["value"]) == 30
    assert env["DEEPINFRA_SERVE_WEBHOOK_ALLOWED_NETWORKS"]["value"] == ""
    # The liveness probe restarts a pod whose exit got stuck, after the stall is noticed.
    live = container["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] <= 60


def test_gpu_counts_per_card() -> None:
    counts = {}
    for path in CARD_VALUES:
        pod = kind(render(values_of(path)), "Deployment")["spec"]["template"]["spec"]
        counts[path.stem] = pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert counts == {
        "values-codellama-70b-instruct": 4,
        "values-mistral-nemo-instruct-2407": 1,
        "values-mythomax-l2-13b-turbo": 2,
        "values-pygmalion-13b-4bit-128g": 1,
    }


def test_api_processes_come_from_the_mounted_card_unless_set() -> None:
    def env_of(values: dict[str, Any]) -> dict[str, Any]:
        docs = render({"modelCard": "mythomax-l2-13b-turbo.yaml", **values})
        [container] = kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
        card = yaml.safe_load(kind(docs, "ConfigMap")["data"]["card.yaml"])
        assert card["engine"]["api_processes"] == 2  # what the process reads by default
        return {e["name"]: e for e in container["env"]}

    assert "DEEPINFRA_SERVE_API_PROCESSES" not in env_of({})
    assert env_of({"server": {"apiProcesses": 5}})["DEEPINFRA_SERVE_API_PROCESSES"]["value"] == "5"
    # The edges of a pod without a front door: the read timeout, and a connection bound that
    # the server derives from the concurrency limit unless set.
    assert env_of({})["DEEPINFRA_SERVE_READ_TIMEOUT_S"]["value"] == "30"
    assert "DEEPINFRA_SERVE_MAX_CONNECTIONS" not in env_of({})
    held = env_of({"server": {"maxConnections": 4096}})
    assert held["DEEPINFRA_SERVE_MAX_CONNECTIONS"]["value"] == "4096"


def test_secrets_become_env_and_a_mounted_key_file() -> None:
    docs = render({"huggingFaceToken": {"secretName": "hf"}, "apiKeys": {"secretName": "keys"}})
    pod = kind(docs, "Deployment")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf", "key": "HF_TOKEN"}
    assert env["DEEPINFRA_SERVE_API_KEYS_FILE"]["value"] == "/etc/deepinfra-serve/secrets/api-keys"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["api-keys"]["secret"]["secretName"] == "keys"


def test_the_store_is_a_secret_url_or_sqlite_on_the_cache_volume() -> None:
    """A release of several pods shares one PostgreSQL store (its URL from a Secret) and does
    not render without one; a single pod keeps SQLite on the model cache volume."""
    shared = render({"replicaCount": 2, "store": {"secretName": "store"}})
    [container] = kind(shared, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["DEEPINFRA_SERVE_STORE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "store",
        "key": "url",
    }
    assert "DEEPINFRA_SERVE_DATA_DIR" not in env
    assert env["DEEPINFRA_SERVE_USAGE_LEDGER"]["value"] == "true"
    assert env["DEEPINFRA_SERVE_USAGE_RETENTION_DAYS"]["value"] == "30"
    alone = render({})
    [container] = kind(alone, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["DEEPINFRA_SERVE_DATA_DIR"]["value"] == "/models/deepinfra-serve-data"
    assert "DEEPINFRA_SERVE_STORE_URL" not in env
    for several in (
        {"replicaCount": 2},
        {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 3}},
        {
            "models": [
                {"modelCard": "mythomax-l2-13b-turbo.yaml"},
                {"modelCard": "codellama-70b-instruct.yaml"},
            ]
        },
    ):
        with pytest.raises(helm_python.HelmError, match=r"store\.secretName"):
            render(several)


def test_tracing_is_opentelemetrys_own_settings_on_every_replica_and_off_by_default() -> None:
    def env_of(values: dict[str, Any]) -> dict[str, Any]:
        [container] = kind(render(values), "Deployment")["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e.get("value") for e in container["env"]}

    assert not [name for name in env_of({}) if name.startswith("OTEL_")]
    env = env_of(
        {
            "tracing": {
                "endpoint": "http://otel-collector.observability:4318",
                "protocol": "http/protobuf",
                "sampler": "traceidratio",
                "samplerArg": "0.1",
                "resourceAttributes": "deployment.environment=prod",
            }
        }
    )
    assert {k: v for k, v in env.items() if k.startswith("OTEL_")} == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4318",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "deepinfra-serve",
        "OTEL_TRACES_SAMPLER": "traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod",
    }
    with pytest.raises(helm_python.HelmError, match="tracing"):
        render({"tracing": {"protocol": "http/json"}})


def test_existing_claim_replaces_the_pvc() -> None:
    docs = render(
        {"modelCache": {"enabled": True, "existingClaim": "shared-models", "mountPath": "/models"}}
    )
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    pod = kind(docs, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model-cache"]["persistentVolumeClaim"]["claimName"] == "shared-models"


def test_optional_objects() -> None:
    docs = render(
        {
            "serviceMonitor": {"enabled": True},
            "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 3},
            "podDisruptionBudget": {"enabled": True, "minAvailable": 1},
            "store": {"secretName": "store"},
        }
    )
    monitor = kind(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    hpa = kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "deepinfra_requests_in_flight"
    assert "replicas" not in kind(docs, "Deployment")["spec"]
    assert kind(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    for doc in docs:
        if doc["kind"] != "ServiceMonitor":  # a CRD; not in the bundled schemas
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_inline_card_wins(tmp_path: Path) -> None:
    text = (ROOT / "model_cards" / "codellama-70b-instruct.yaml").read_text()
    docs = render({"card": text})
    assert kind(docs, "ConfigMap")["data"]["card.yaml"].strip() == text.strip()
    pod = kind(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 4


@pytest.mark.parametrize(
    "values",
    [
        {"replicaCount": "two"},
        {"modelCard": "no-such-card.yaml"},
        {"unknownKey": 1},
        {"server": {"apiProcesses": 0}},
    ],
)
def test_bad_values_are_refused(values: dict[str, Any]) -> None:
    with pytest.raises(helm_python.HelmError):
        render(values)


def test_helm_lint_reports_no_errors() -> None:
    result = helm_python.lint(CHART)
    assert result["errors"] == []
    assert [m for m in result["messages"] if m["severity"] >= 3] == []
    for path in CARD_VALUES:
        assert helm_python.lint(CHART, values_of(path))["errors"] == []


def test_the_image_the_chart_runs_is_the_gpu_build_as_non_root() -> None:
    # The image is built and run for real by tests/image (its CPU variant); this is what the
    # chart relies on of the default build.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG VARIANT=gpu" in dockerfile
    assert 'pip install ".[${VARIANT}]"' in dockerfile
    assert dockerfile.index("USER 1000:1000") > dockerfile.index("RUN pip install")
