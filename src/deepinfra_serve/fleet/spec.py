"""The fleet file: which cards run, how many replicas of each, and how replicas are picked."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError

from ..config import strict_yaml
from ..config.cards import CardError, ModelCard, load_card
from ..config.models import StrictModel

Policy = Literal["prefix", "leastconn", "roundrobin"]


class FleetModel(StrictModel):
    card: Path = Field(description="The model card, relative to the fleet file.")
    replicas: int = Field(1, ge=1, le=64)


class FleetSpec(StrictModel):
    device: Literal["auto", "cuda", "cpu"] = "auto"
    gpus: int = Field(0, ge=0, le=64, description="GPUs of the node, for device cuda.")
    policy: Policy = Field(
        "prefix",
        description="prefix: the same prompt start goes to the same replica (prefix-cache "
        "hits) unless it is 50 % busier than the average; leastconn: the replica with the "
        "fewest requests in flight; roundrobin: in turn.",
    )
    models: list[FleetModel] = Field(min_length=1)


@dataclass(frozen=True)
class Replica:
    """One `deepinfra-serve serve` process of a fleet."""

    name: str  # the process name: the card's slug and the replica's index
    card: ModelCard
    card_path: Path
    port: int
    gpus: tuple[int, ...]  # CUDA devices it owns; empty on the CPU
    # On the CPU, the cores its engine computes on, one per tensor-parallel rank, taken in turn
    # from the node's: left to vLLM, every replica's engine would bind to the first core (and a
    # replica loading there would wait behind the others' work); empty on GPUs.
    cpus: tuple[int, ...] = ()


@dataclass(frozen=True)
class Fleet:
    spec: FleetSpec
    device: str  # where the replicas run: cuda or cpu
    cards: list[tuple[ModelCard, Path]]  # in the file's order, one per model
    replicas: list[Replica]

    def backend(self, card: ModelCard) -> str:
        return "model_" + slug(card.name)


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


class FleetError(ValueError):
    """A fleet that cannot run; the message names the file and the problem."""


def load_fleet(path: Path, *, device: str, first_port: int) -> Fleet:
    """Read a fleet file, load its cards, give each replica a loopback port and, on GPUs, its
    own devices (as many as the card's tensor_parallel_size, in the file's order).

    `device` auto: the file's, else what this machine has."""
    try:
        spec = FleetSpec.model_validate(strict_yaml.load(path.read_text()))
    except (OSError, yaml.YAMLError) as exc:
        raise FleetError(f"{path}: cannot read fleet file: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise FleetError(f"{path}: invalid fleet file: {problems}") from exc
    if device == "auto":
        device = spec.device
    if device == "auto":
        from ..engine.engine_args import detect_device

        device = detect_device()
    cards: list[tuple[ModelCard, Path]] = []
    for model in spec.models:
        card_path = (path.parent / model.card).resolve()
        try:
            card = load_card(card_path)
        except CardError as exc:
            raise FleetError(f"{path}: {exc}") from exc
        if any(card.name == seen.name for seen, _ in cards):
            raise FleetError(f"{path}: {card.name} is listed twice; raise its replicas instead")
        cards.append((card, card_path))

    replicas: list[Replica] = []
    next_gpu = next_cpu = 0
    cores = sorted(os.sched_getaffinity(0))
    for (card, card_path), model in zip(cards, spec.models, strict=True):
        tp = card.engine.tensor_parallel_size
        for index in range(model.replicas):
            gpus: tuple[int, ...] = ()
            cpus: tuple[int, ...] = ()
            if device == "cuda":
                gpus = tuple(range(next_gpu, next_gpu + tp))
                next_gpu += tp
            else:
                cpus = tuple(cores[(next_cpu + rank) % len(cores)] for rank in range(tp))
                next_cpu += tp
            port = first_port + len(replicas)
            name = f"{slug(card.name)}-{index}"
            replicas.append(Replica(name, card, card_path, port, gpus, cpus))
    if device == "cuda" and next_gpu > spec.gpus:
        raise FleetError(
            f"{path}: the replicas need {next_gpu} GPUs (tensor_parallel_size each), "
            f"the node has {spec.gpus}"
        )
    return Fleet(spec, device, cards, replicas)
