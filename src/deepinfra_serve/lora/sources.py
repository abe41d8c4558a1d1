"""Where an adapter added at run time comes from, and whether it fits its base.

`hf_model_name` names a hub repository (`Owner/Name`, pulled with the caller's token, which is
used once and never kept), or an absolute path inside one of the folders the operator lists in
`ADAPTER_DIRS`: the server reads no other folder and no other host for a caller. Only PEFT's
safetensors layout is taken (a pickled `.bin` could run code on load).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine.errors import APIError

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
# The projections vLLM applies adapters to in Llama-like models, and their shapes by the
# model's config: (in_features, out_features).
_SHAPES = {
    "q_proj": ("hidden", "q"),
    "k_proj": ("hidden", "kv"),
    "v_proj": ("hidden", "kv"),
    "o_proj": ("q", "hidden"),
    "gate_proj": ("hidden", "intermediate"),
    "up_proj": ("hidden", "intermediate"),
    "down_proj": ("intermediate", "hidden"),
}
_KEY = re.compile(r"\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")


def refused(message: str) -> APIError:
    return APIError(400, f"hf_model_name: {message}", param="hf_model_name", code="invalid_value")


@dataclass(frozen=True, slots=True)
class Checked:
    folder: Path  # the PEFT folder: adapter_config.json and adapter_model.safetensors
    rank: int

    @property
    def files(self) -> list[Path]:
        """What is kept of it: its config and its weights, nothing else the folder holds."""
        return [self.folder / CONFIG, self.folder / WEIGHTS]


def local_folder(name: str, allowed: list[Path]) -> Path:
    """The folder `name` names, when it lies inside an allowed one (links resolved first)."""
    folder = Path(os.path.realpath(name))
    for root in allowed:
        root = Path(os.path.realpath(root))
        if folder != root and folder.is_relative_to(root):
            if not folder.is_dir():
                raise refused(f"`{name}` is not a folder")
            return folder
    raise refused(f"`{name}` is not inside a folder this server loads adapters from")


def pull(repo: str, token: str | None, work: Path) -> Path:
    """The adapter's files from the hub, into `work`."""
    if not _REPO.match(repo):
        raise refused(f"`{repo}`: a hub repository Owner/Name or an absolute path")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        snapshot_download(
            repo, token=token or False, local_dir=work, allow_patterns=[CONFIG, WEIGHTS]
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        raise refused(f"`{repo}` could not be pulled from the hub ({type(exc).__name__})") from exc
    return work


def check(folder: Path, base_config: dict[str, Any], max_rank: int, max_bytes: int) -> Checked:
    """A PEFT LoRA of this base, within the bounds; a 400 naming `hf_model_name` otherwise."""
    config_file, weights = folder / CONFIG, folder / WEIGHTS
    if not config_file.is_file() or not weights.is_file():
        raise refused(f"a PEFT adapter folder has {CONFIG} and {WEIGHTS}")
    if config_file.is_symlink() or weights.is_symlink():
        # A link could lead out of the folders the operator allows.
        raise refused(f"{CONFIG} and {WEIGHTS} must be files, not links")
    if config_file.stat().st_size + weights.stat().st_size > max_bytes:
        raise refused(f"the adapter is larger than this server takes ({max_bytes} bytes)")
    try:
        config = json.loads(config_file.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise refused(f"{CONFIG} is not JSON") from exc
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise refused("not a LoRA adapter (peft_type is not LORA)")
    rank = config.get("r")
    if not isinstance(rank, int) or rank < 1:
        raise refused(f"{CONFIG}: r must be a positive integer")
    if rank > max_rank:
        raise refused(f"rank {rank} is over this model's max_lora_rank {max_rank}")
    _check_shapes(weights, rank, base_config)
    return Checked(folder, rank)


def _dims(config: dict[str, Any]) -> dict[str, int]:
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    return {
        "hidden": hidden,
        "q": heads * head_dim,
        "kv": config.get("num_key_value_heads", heads) * head_dim,
        "intermediate": config.get("intermediate_size", 4 * hidden),
    }


def _check_shapes(weights: Path, rank: int, base_config: dict[str, Any]) -> None:
    from safetensors import SafetensorError, safe_open

    dims = _dims(base_config)
    layers = base_config["num_hidden_layers"]
    try:
        with safe_open(str(weights), framework="pt") as f:
            keys = list(f.keys())
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in keys}
    except (SafetensorError, OSError) as exc:
        raise refused(f"{WEIGHTS} is not a safetensors file") from exc
    if not keys:
        raise refused(f"{WEIGHTS} holds no LoRA weights")
    for key, shape in shapes.items():
        m = _KEY.search(key)
        if m is None or m[2] not in _SHAPES:
            raise refused(f"`{key}` is not a LoRA weight of this model's layers")
        layer, module, ab = int(m[1]), m[2], m[3]
        in_dim, out_dim = (dims[d] for d in _SHAPES[module])
        want = (rank, in_dim) if ab == "A" else (out_dim, rank)
        if layer >= layers or shape != want:
            raise refused(
                f"`{key}` has shape {list(shape)}, not {list(want)}: not a LoRA of this model"
            )
