"""Handlers of DeepInfra's LoRA routes: `POST /lora-model` adds an adapter of the served model
for the calling key, `DELETE /lora-model/{name}` removes one of the key's, and
`GET /models/lora/list` lists what can be called (the card's adapters and the key's own).

An adapter is checked before anything is kept (its source, its PEFT files against the base's
shapes and the card's rank bound, then the engine loading it), so a refused one leaves the
served set as it was.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from ..config.cards import ModelCard
from ..config.served import ServedAdapter
from ..config.settings import ServerSettings
from ..engine.call import Call
from ..engine.errors import APIError, model_loading, not_found, store_unavailable
from ..engine.served_model import ServedModel
from ..store import adapters as stored
from ..store.database import Store
from . import sources
from .registry import Adapters
from .schema import DeploymentOut, LoraModelUploadIn


@dataclass
class LoraServices:
    adapters: Adapters
    settings: ServerSettings
    base_config: dict[str, Any] | None = None  # the base model's config.json, once prepared
    model: ServedModel | None = None  # the engine, once it runs

    @property
    def card(self) -> ModelCard:
        return self.adapters.card

    def store(self) -> Store:
        if self.adapters.store is None:
            raise store_unavailable()
        return self.adapters.store


def _owner(call: Call[Any, Any]) -> str:
    return "" if call.tenant is None else call.tenant.owner


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _deployment(row: stored.AdapterRow, status: Literal["deployed", "deleted"]) -> DeploymentOut:
    created = _iso(row.created_at)
    return DeploymentOut(
        deploy_id=f"lora-{row.id}",
        model_name=row.name,
        version=str(row.id),
        status=status,
        created_at=created,
        updated_at=created if status == "deployed" else _iso(time.time()),
    )


async def add_lora_model(call: Call[LoraServices, LoraModelUploadIn]) -> DeploymentOut:
    services, req = call.services, call.body
    card, lora = services.card, services.card.lora
    base = req.base_model_name or card.name
    if base != card.name:
        raise APIError(
            404,
            f"base_model_name: `{base}` is not served here (this server serves `{card.name}`)",
            param="base_model_name",
            code="model_not_found",
        )
    if lora is None:
        raise APIError(
            400,
            f"base_model_name: `{base}` takes no LoRA adapters here",
            param="base_model_name",
            code="invalid_value",
        )
    model = services.model
    if model is None or services.base_config is None:
        raise model_loading()
    store = services.store()
    name = req.lora_model_name
    if name == card.name or name in services.adapters.fixed:
        raise _taken(name)
    if await store.call(stored.by_name, store, name) is not None:
        raise _taken(name)
    allowed = [Path(p) for p in services.settings.adapter_dirs.split(":") if p]
    with tempfile.TemporaryDirectory(prefix="deepinfra-lora-") as tmp:
        if req.hf_model_name.startswith("/"):
            folder = sources.local_folder(req.hf_model_name, allowed)
        else:
            folder = await asyncio.to_thread(
                sources.pull, req.hf_model_name, req.hf_token, Path(tmp) / "pulled"
            )
        checked = await asyncio.to_thread(
            sources.check,
            folder,
            services.base_config,
            lora.max_lora_rank,
            services.settings.max_adapter_bytes,
        )
        # The engine loads it from a folder of its own first, under an id no stored adapter
        # has: what vLLM cannot load is refused before anything is kept.
        trial = ServedAdapter(name, _trial_id(), str(checked.folder), card.pricing)
        try:
            await model.add_adapter(trial)
        except Exception as exc:
            raise sources.refused(
                f"the engine cannot load it as a LoRA of `{base}`: {exc}"
            ) from exc
        finally:
            await model.remove_adapter(trial)
        try:
            row = await store.call(
                stored.add,
                store,
                name=name,
                base=base,
                owner=_owner(call),
                source=req.hf_model_name,
                rank=checked.rank,
                files=checked.files,
                max_added=lora.max_added,
                max_per_key=lora.max_added_per_key,
            )
        except stored.NameTaken:
            raise _taken(name) from None
        except stored.OverBound as exc:
            raise _over(str(exc), lora.max_added, lora.max_added_per_key) from None
    return _deployment(row, "deployed")


_trials = iter(range(1, 1 << 30))


def _trial_id() -> int:
    """An engine id for checking an adapter: far past the stored ones'."""
    return (1 << 30) + next(_trials)


def _taken(name: str) -> APIError:
    return APIError(
        409,
        f"lora_model_name: `{name}` is already a model name here",
        param="lora_model_name",
        code="name_taken",
    )


def _over(bound: str, max_added: int, per_key: int) -> APIError:
    if bound == "max_added_per_key":
        return APIError(
            429,
            f"This key has {per_key} LoRA adapters of this model, the most a key may add "
            "(max_added_per_key); delete one first",
            code="too_many_adapters",
        )
    return APIError(
        409,
        f"This model has {max_added} LoRA adapters, the most it serves (max_added); "
        "delete one first",
        code="too_many_adapters",
    )


async def delete_lora_model(call: Call[LoraServices, None]) -> DeploymentOut:
    services = call.services
    store = services.store()
    name = call.params["lora_model_name"]
    row = await store.call(stored.remove, store, name, _owner(call))
    if row is None:
        raise not_found(name)
    services.adapters.forget(name, row.id)
    # The engine that loaded it lets it go; other replicas stop serving it within
    # `registry.RECHECK_S` and their engines drop it as it falls out of use.
    if services.model is not None and row.base == services.card.name:
        await services.model.remove_adapter(services.adapters.served(row))
    return _deployment(row, "deleted")


async def added_adapters(services: LoraServices, owner: str | None) -> list[stored.AdapterRow]:
    """The adapters `owner` added (none for a caller without a key on a server with keys)."""
    if owner is None or not services.adapters.takes_added:
        return []
    store = services.store()
    rows = await store.call(stored.of_base, store, services.card.name)
    return [r for r in rows if r.owner == owner]


def base_config(model_folder: str) -> dict[str, Any] | None:
    """The base model's config.json, where its weights are a local folder (hub weights: read
    from the hub's cache once the engine has them)."""
    path = Path(model_folder) / "config.json"
    if path.is_file():
        return dict(json.loads(path.read_text()))
    try:
        from huggingface_hub import hf_hub_download

        return dict(json.loads(Path(hf_hub_download(model_folder, "config.json")).read_text()))
    except Exception:
        return None
