"""LoRA adapters served as model names: the card's, and those added at run time
(`POST /lora-model`), kept in the store."""
