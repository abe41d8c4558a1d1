"""One release, several cards, one front door: the chart's fleet objects, validated strictly."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from deepinfra_serve.config.cards import load_card

from ..helpers import KUBE_VERSION, ROOT, render

CARD_FILES = [
    "mythomax-l2-13b-turbo.yaml",
    "codellama-70b-instruct.yaml",
    "mistral-nemo-instruct-2407.yaml",
    "pygmalion-13b-4bit-128g.yaml",
]
FLEET = {
    "models": [
        {"modelCard": "mythomax-l2-13b-turbo.yaml", "replicaCount": 2},
        {"modelCard": "codellama-70b-instruct.yaml", "resources": {"requests": {"cpu": "16"}}},
        {"modelCard": "mistral-nemo-instruct-2407.yaml"},
        {"modelCard": "pygmalion-13b-4bit-128g.yaml"},
    ],
    "inferencePool": {"enabled": True},
    "store": {"secretName": "store"},
}

# InferencePool of inference.networking.k8s.io/v1 with the fields of gateway-api-inference-
# extension v1.6.0 (spec.selector.matchLabels, targetPorts[].number, appProtocol,
# endpointPickerRef {name, port.number, failureMode}); a field outside them fails.
_NAME = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
INFERENCE_POOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "inference.networking.k8s.io/v1"},
        "kind": {"const": "InferencePool"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": _NAME, "labels": {"type": "object"}},
        },
        "spec": {
            "type": "object",
            "required": ["selector", "targetPorts", "endpointPickerRef"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "required": ["matchLabels"],
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "minProperties": 1,
                            "additionalProperties": {"type": "string", "maxLength": 63},
                        }
                    },
                },
                "targetPorts": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["number"],
                        "additionalProperties": False,
                        "properties": {"number": _PORT},
                    },
                },
                "appProtocol": {"type": "string", "minLength": 1},
                "endpointPickerRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "group": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": _NAME,
                        "port": {
                            "type": "object",
                            "required": ["number"],
                            "additionalProperties": False,
                            "properties": {"number": _PORT},
                        },
                        "failureMode": {"enum": ["FailOpen", "FailClose"]},
                    },
                },
            },
        },
    },
}


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    return doc


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return render(FLEET, name="fleet")


def test_every_object_is_valid(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        if doc["kind"] == "InferencePool":
            jsonschema.validate(doc, INFERENCE_POOL_SCHEMA)
        else:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    assert len(of_kind(docs, "InferencePool")) == 4


def test_the_inference_pool_schema_is_strict(docs: list[dict[str, Any]]) -> None:
    pool = of_kind(docs, "InferencePool")[0]
    wrong = {**pool, "spec": {**pool["spec"], "targetPortNumber": 8000}}  # an older field
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wrong, INFERENCE_POOL_SCHEMA)


def test_one_deployment_per_card_with_its_gpus(docs: list[dict[str, Any]]) -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    for file in CARD_FILES:
        card = load_card(ROOT / "model_cards" / file)
        name = f"fleet-deepinfra-serve-{file.removesuffix('.yaml')}"
        pod = deployments[name]["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == (
            card.engine.tensor_parallel_size
        )
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["DEEPINFRA_SERVE_FLEET_CARDS"] == "/etc/deepinfra-serve/fleet"
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["fleet-cards"] == "/etc/deepinfra-serve/fleet"
        assert mounts["card"] == "/etc/deepinfra-serve/card.yaml"
    mythomax = deployments["fleet-deepinfra-serve-mythomax-l2-13b-turbo"]
    assert mythomax["spec"]["replicas"] == 2
    codellama = deployments["fleet-deepinfra-serve-codellama-70b-instruct"]
    resources = codellama["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"]["cpu"] == "16"
    assert resources["requests"]["memory"] == "32Gi"  # the rest of the top-level values


def test_every_pod_knows_every_card(docs: list[dict[str, Any]]) -> None:
    cards = named(docs, "ConfigMap", "fleet-deepinfra-serve-fleet-cards")["data"]
    assert {k: v.strip() for k, v in cards.items()} == {
        file: (ROOT / "model_cards" / file).read_text().strip() for file in CARD_FILES
    }


def test_selectors_keep_models_and_the_front_door_apart(docs: list[dict[str, Any]]) -> None:
    pods = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in of_kind(docs, "Deployment")
    }
    for service in of_kind(docs, "Service"):
        chosen = [n for n, labels in pods.items() if selects(service["spec"]["selector"], labels)]
        assert len(chosen) == 1, (service["metadata"]["name"], chosen)
    front = named(docs, "Service", "fleet-deepinfra-serve")  # the release's one base URL
    assert selects(front["spec"]["selector"], pods["fleet-deepinfra-serve-front-door"])
    for pool in of_kind(docs, "InferencePool"):
        chosen = [
            n
            for n, labels in pods.items()
            if selects(pool["spec"]["selector"]["matchLabels"], labels)
        ]
        assert chosen == [pool["metadata"]["name"]]
        assert pool["spec"]["endpointPickerRef"]["name"] == pool["metadata"]["name"] + "-epp"


def test_the_front_door_has_least_privilege(docs: list[dict[str, Any]]) -> None:
    [account] = of_kind(docs, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert not of_kind(docs, "Role") and not of_kind(docs, "ClusterRole")
    assert not of_kind(docs, "RoleBinding") and not of_kind(docs, "ClusterRoleBinding")
    pod = named(docs, "Deployment", "fleet-deepinfra-serve-front-door")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    [container] = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    # Headless Services publish ready pods only: loading and draining replicas get no traffic.
    for service in of_kind(docs, "Service"):
        if service["metadata"]["name"].endswith("-replicas"):
            assert service["spec"]["clusterIP"] == "None"
            assert service["spec"]["publishNotReadyAddresses"] is False


def test_the_front_door_routes_every_model(docs: list[dict[str, Any]], tmp_path: Path) -> None:
    data = named(docs, "ConfigMap", "fleet-deepinfra-serve-front-door")["data"]
    routes = dict(line.split() for line in data["models.map"].splitlines() if line.strip())
    names = [load_card(ROOT / "model_cards" / f).name for f in CARD_FILES]
    assert sorted(routes) == sorted(names)
    config = data["haproxy.cfg"]
    for backend in routes.values():
        assert f"backend {backend}\n" in config
    assert "balance hash var(txn.prefix),bytes(0,256)" in config
    # A client's prompt_cache_key, when it sends one, is what the hash reads first.
    key_line = "http-request set-var(txn.prefix) req.body,json_query('$.prompt_cache_key')"
    assert config.index(key_line) < config.index("json_query('$.messages[0].content')")
    # HAProxy itself accepts the rendered configuration.
    if shutil.which("haproxy") is None:
        pytest.skip("Debian's haproxy is not installed here (`make test` installs it as root)")
    for key, text in data.items():
        (tmp_path / key).write_text(text.replace("/usr/local/etc/haproxy", str(tmp_path)))
    check = subprocess.run(
        ["haproxy", "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_single_card_release_renders_no_fleet_objects() -> None:
    docs = render({})
    assert {d["kind"] for d in docs} == {
        "ConfigMap",
        "Deployment",
        "Service",
        "PersistentVolumeClaim",
    }
    assert [d["metadata"]["name"] for d in of_kind(docs, "Deployment")] == ["llm-deepinfra-serve"]


def test_a_single_card_can_have_the_front_door() -> None:
    docs = render({"frontDoor": {"enabled": True}})
    names = {d["metadata"]["name"] for d in of_kind(docs, "Service")}
    assert names == {
        "llm-deepinfra-serve",
        "llm-deepinfra-serve-replicas",
        "llm-deepinfra-serve-front-door",
    }
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    model = named(docs, "Deployment", "llm-deepinfra-serve")
    front = named(docs, "Service", "llm-deepinfra-serve")
    front_pods = named(docs, "Deployment", "llm-deepinfra-serve-front-door")
    assert selects(front["spec"]["selector"], model["spec"]["template"]["metadata"]["labels"])
    assert not selects(
        front["spec"]["selector"], front_pods["spec"]["template"]["metadata"]["labels"]
    )


@pytest.mark.parametrize(
    "values",
    [
        {"models": [{"modelCard": "no-such-card.yaml"}]},
        {"models": [{"card": "name: a/b"}]},  # inline without a name
        {"frontDoor": {"policy": "random"}},
        {"inferencePool": {"endpointPicker": {"failureMode": "Sometimes"}}},
    ],
)
def test_bad_fleet_values_are_refused(values: dict[str, Any]) -> None:
    import helm_python

    with pytest.raises(helm_python.HelmError):
        render(values)


def test_the_fleet_file_and_the_chart_agree_on_the_node() -> None:
    """The 8 x H100 fleet file is the chart's four cards, one replica each, on 8 GPUs."""
    spec = yaml.safe_load((ROOT / "fleets" / "h100x8.yaml").read_text())
    files = [Path(m["card"]).name for m in spec["models"]]
    assert files == CARD_FILES
    gpus = sum(load_card(ROOT / "model_cards" / f).engine.tensor_parallel_size for f in files)
    assert gpus == spec["gpus"] == 8


def test_the_front_door_holds_keys_by_digest_and_keeps_the_tiers_apart(tmp_path: Path) -> None:
    values = {
        **FLEET,
        "apiKeys": {"secretName": "keys", "rateLimit": 200},
        "frontDoor": {"replicaCount": 3, "keyLimits": {"secretName": "key-limits"}},
    }
    docs = render(values, name="fleet")
    data = named(docs, "ConfigMap", "fleet-deepinfra-serve-front-door")["data"]
    config = data["haproxy.cfg"]
    # Each of 3 front doors holds ceil(limit / 3) of a key's requests; the keys' own limits come
    # from the Secret, by digest.
    assert "map(/usr/local/etc/haproxy/keys/key_limits.map,200),add(2),div(3)" in config
    assert "track-sc0 var(txn.key_id) table key_limits" in config
    assert "digest(sha256),hex,lower" in config
    [door] = [
        d
        for d in of_kind(docs, "Deployment")
        if d["metadata"]["name"] == "fleet-deepinfra-serve-front-door"
    ]
    volumes = {v["name"]: v for v in door["spec"]["template"]["spec"]["volumes"]}
    assert volumes["key-limits"]["secret"]["secretName"] == "key-limits"
    # A replica takes default's limit and priority's reserve (200 + 20) from the front door,
    # which queues priority first past it; flex goes through a backend of its own.
    backend = config.index("backend model_mythomax-l2-13b-turbo\n")
    assert "default-server maxconn 220" in config[backend : backend + 1500]
    assert "backend model_mythomax-l2-13b-turbo_flex\n" in config
    assert "set-priority-class int(-10) if { var(txn.tier) -m str priority }" in config
    # A replica's 429 is an answer: retries are for connection failures and 503s only.
    assert "retry-on conn-failure empty-response 503\n" in config
    # Replicas hold each key to the same default.
    for pod in of_kind(docs, "Deployment"):
        if pod is not door:
            [server] = pod["spec"]["template"]["spec"]["containers"]
            env = {e["name"]: e.get("value") for e in server["env"]}
            assert env["DEEPINFRA_SERVE_KEY_RATE_LIMIT"] == "200"
    if shutil.which("haproxy") is None:
        pytest.skip("Debian's haproxy is not installed here (`make test` installs it as root)")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "key_limits.map").write_text(f"{'0' * 64} 5\n")
    for key, text in data.items():
        (tmp_path / key).write_text(text.replace("/usr/local/etc/haproxy", str(tmp_path)))
    check = subprocess.run(
        ["haproxy", "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_cards_lora_adapters_are_routed_to_its_replicas() -> None:
    models = [
        {"card": (ROOT / "model_cards" / "dev" / f"{name}.yaml").read_text(), "name": name}
        for name in ("tiny-random", "tiny-mistral")
    ]
    store = {"secretName": "store", "key": "url"}
    docs = render({"models": models, "store": store}, name="fleet")
    data = named(docs, "ConfigMap", "fleet-deepinfra-serve-front-door")["data"]
    routes = dict(line.split() for line in data["models.map"].splitlines() if line.strip())
    base, adapter = "deepinfra-serve/tiny-random-llama", "deepinfra-serve/tiny-random-llama-pirate"
    assert routes[adapter] == routes[base] != routes["deepinfra-serve/tiny-mistral"]
    assert (
        "use_backend any_model if METH_POST { var(txn.backend) -m str any }" in data["haproxy.cfg"]
    )
