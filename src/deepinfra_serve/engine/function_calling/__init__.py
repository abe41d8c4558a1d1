"""Function calling on the chat API: describing tools to the model and reading its calls.

Parsing, forced calls (JSON schemas for structured outputs) and streamed tool-call deltas are
vLLM's own (`vllm.parser`); a card picks the tool parser, and this package adds the prompt
format for models that have none (`prompt`, `json_parser`) and the per-request glue
(`calls`).
"""
