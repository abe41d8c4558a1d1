"""Tiny random models made from a seed, for the dev cards (`weights.source: generated`): the
tests and the quick CPU server run them. Deterministic for a given card, a few MB, gibberish.

bpe: a Llama with a small byte-level BPE tokenizer trained here on a fixed corpus; tekken: a
Mistral with Mistral-Nemo's own tokenizer (tekken v3, as mistral_common ships it), for
tokenizer_mode mistral.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..config.cards import GeneratedWeights


def generate(spec: GeneratedWeights, out: Path) -> None:
    """Write the model, its tokenizer and generation config into `out` (a new folder)."""
    if spec.tokenizer == "tekken":
        _generate_tiny_mistral(spec, out)
    else:
        _generate_tiny_llama(spec, out)


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


def _shape(spec: GeneratedWeights) -> dict[str, Any]:
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
    model = LlamaForCausalLM(config).float()
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
    MistralForCausalLM(config).float().save_pretrained(out)
    GenerationConfig(bos_token_id=1, eos_token_id=2).save_pretrained(out)
