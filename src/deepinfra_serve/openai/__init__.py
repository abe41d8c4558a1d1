"""DeepInfra's OpenAI-compatible API, served under /v1/openai."""
