"""deepinfra-serve: host open LLMs behind DeepInfra's public API on vLLM's async engine."""

__version__ = "0.1.0"
