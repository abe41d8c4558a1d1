"""LoRA adapters served as model names."""
