"""Benchmarks, one module per arm (`make bench` runs them all):

- `vs_vllm`: this service against vLLM's own OpenAI server, side by side;
- `fleet`: what the fleet's front door costs, and what prefix-affine balancing buys.

The arms share the workload (`workload`), the servers under test (`servers`), the figures
(`measure`) and the report (`report`).
"""
