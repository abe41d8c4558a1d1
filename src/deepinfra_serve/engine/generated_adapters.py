"""Random LoRA adapters made from a seed, in PEFT's file layout, for the dev cards
(`lora.adapters[].weights.source: generated`): the tests serve them on the real engine.

Their deltas are large next to the tiny random models' weights (std 0.02), so that an adapter
changes what a greedy request says; the same seed gives the same adapter on every machine.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config.adapters import GeneratedAdapterWeights

TARGET_MODULES = ("q_proj", "v_proj")


def generate_adapter(spec: GeneratedAdapterWeights, base: Path, out: Path) -> None:
    """Write `adapter_config.json` and `adapter_model.safetensors` for the model in `base`
    into `out` (a new folder)."""
    import torch
    from safetensors.torch import save_file

    config = json.loads((base / "config.json").read_text())
    hidden = config["hidden_size"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    outputs = {
        "q_proj": config["num_attention_heads"] * head_dim,
        "v_proj": config["num_key_value_heads"] * head_dim,
    }
    generator = torch.Generator().manual_seed(spec.seed)
    tensors: dict[str, torch.Tensor] = {}
    for layer in range(config["num_hidden_layers"]):
        for module in TARGET_MODULES:
            key = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            a = torch.randn(spec.rank, hidden, generator=generator) * 0.1
            b = torch.randn(outputs[module], spec.rank, generator=generator) * 0.1
            tensors[f"{key}.lora_A.weight"] = a.contiguous()
            tensors[f"{key}.lora_B.weight"] = b.contiguous()
    out.mkdir(parents=True)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "task_type": "CAUSAL_LM",
                "base_model_name_or_path": str(base),
                "r": spec.rank,
                "lora_alpha": 2 * spec.rank,
                "lora_dropout": 0.0,
                "bias": "none",
                "target_modules": list(TARGET_MODULES),
                "fan_in_fan_out": False,
                "modules_to_save": None,
                "use_rslora": False,
            },
            indent=2,
        )
    )
