"""The local fleet's front door (`fleet/haproxy.cfg.j2`) and the chart's (`front-door.yaml`)
are two templates of one HAProxy configuration: rendered for the same cards, they agree
section by section and line by line, except where a Kubernetes cluster and one machine must
differ, each difference named below."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deepinfra_serve.config.settings import ServerSettings
from deepinfra_serve.fleet.config import write_config
from deepinfra_serve.fleet.run import DEFAULT_MAX_BODY_BYTES
from deepinfra_serve.fleet.spec import load_fleet

from ..helpers import ROOT, render

CHART_DIR = "/usr/local/etc/haproxy/"

# What only one side has, by section: the local door's operators' socket; the chart's DNS
# resolvers (replicas are found through each model's headless Service).
ONLY_LOCAL = {"global": {"stats socket"}}
ONLY_CHART_SECTIONS = {"resolvers cluster"}
# Where the replicas are: ports on the loopback, or DNS names (a `server-template` per model);
# the bind address; and a flex or gzip backend's health, which the local door tracks from the
# model's main backend (`track`) and a `server-template` checks itself.
PLACEMENT = ("server ", "server-template ", "bind ", "option httpchk", "http-check expect")


def _sections(config: str, dirs: tuple[str, ...], backends: dict[str, str]) -> dict[str, list[str]]:
    """HAProxy's sections -> their directives, comments and blank lines left out, files under
    `dirs` named relative to them, and backends by the model they serve."""
    sections: dict[str, list[str]] = {}
    lines: list[str] = []
    for raw in config.splitlines():
        text = raw.split(" #")[0].strip() if not raw.strip().startswith("#") else ""
        if not text:
            continue
        for d in dirs:
            text = text.replace(d, "<dir>/")
        text = text.replace("<dir>/errors/", "<dir>/").replace("<dir>/keys/", "<dir>/")
        for backend, model in sorted(backends.items(), key=lambda b: -len(b[0])):
            text = re.sub(rf"\b{re.escape(backend)}(_flex)?\b", rf"<{model}>\1", text)
        if not raw[0].isspace():
            lines = sections.setdefault(" ".join(text.split()), [])
        else:
            lines.append(" ".join(text.split()))
    return sections


def _options(lines: list[str]) -> tuple[list[str], list[str]]:
    """A backend's directives without where its servers are, and its `default-server`
    options (one line locally, two in the chart), the chart's DNS options left out."""
    options: list[str] = []
    rest: list[str] = []
    for line in lines:
        if line.startswith("default-server "):
            words = iter(line.split()[1:])
            for word in words:
                option = word if word == "check" else f"{word} {next(words)}"
                if word not in ("resolvers", "init-addr"):
                    options.append(option)
        elif not line.startswith(PLACEMENT):
            rest.append(line)
    return rest, sorted(options)


def _local(spec: Path, tmp_path: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    fleet = load_fleet(spec, device="auto", first_port=9001)
    run_dir = tmp_path / "local"
    settings = ServerSettings()
    write_config(
        fleet,
        run_dir,
        spec_path=spec,
        host="127.0.0.1",
        port=9000,
        haproxy="haproxy",
        max_body_bytes=DEFAULT_MAX_BODY_BYTES,
        stop_wait_s=30,
        settings=settings,
    )
    backends = _backends((run_dir / "models.map").read_text())
    config = (run_dir / "haproxy.cfg").read_text()
    return _sections(config, (f"{run_dir}/",), backends), backends


def _chart(spec: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    import yaml

    fleet = yaml.safe_load(spec.read_text())
    models = []
    for model in fleet["models"]:
        card = (spec.parent / model["card"]).resolve()
        name = card.stem.split("-")[0]
        models.append({"name": name, "card": card.read_text()})
    values = {
        "models": models,
        "frontDoor": {"policy": fleet["policy"], "replicaCount": 1},
        "store": {"secretName": "store"},
    }
    [data] = [
        d["data"]
        for d in render(values, name="fleet")
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-front-door")
    ]
    backends = _backends(data["models.map"])
    config = data["haproxy.cfg"].replace(",add(0),div(1)", "")  # one door holds the limit
    return _sections(config, (CHART_DIR,), backends), backends


def _backends(models_map: str) -> dict[str, str]:
    """backend -> the model it serves."""
    return {b: m for m, b in (line.split() for line in models_map.splitlines() if line.strip())}


@pytest.mark.parametrize("fleet", ["cpu-demo.yaml", "h100x8.yaml"])
def test_the_local_and_the_chart_front_door_agree_for_the_same_cards(
    fleet: str, tmp_path: Path
) -> None:
    spec = ROOT / "fleets" / fleet
    local, local_backends = _local(spec, tmp_path)
    chart, chart_backends = _chart(spec)
    assert sorted(local_backends.values()) == sorted(chart_backends.values())
    assert set(chart) - set(local) == ONLY_CHART_SECTIONS
    assert set(local) == set(chart) - ONLY_CHART_SECTIONS
    for section, lines in local.items():
        theirs = chart[section]
        if section.startswith("backend "):
            ours, our_options = _options(lines)
            their_lines, their_options = _options(theirs)
            if section.endswith(("_flex", "any_model")):
                # Health: tracked from the main backend locally, checked by each template here.
                our_options = their_options = []
            if section == "backend any_model":
                # Twice round the servers: the replicas here, each model's template there.
                ours = [line for line in ours if not line.startswith("retries ")]
                their_lines = [line for line in their_lines if not line.startswith("retries ")]
            assert ours == their_lines, section
            assert our_options == their_options, section
            continue
        only = ONLY_LOCAL.get(section, set())
        ours = [line for line in lines if not line.startswith((*only, *PLACEMENT))]
        theirs = [line for line in theirs if not line.startswith(PLACEMENT)]
        assert ours == theirs, section
