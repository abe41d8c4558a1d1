"""Anthropic's Messages API, as DeepInfra serves it under /anthropic/v1: its own schema and
formatter over the same prompt rendering, sampling adapter, function calling and generation
core as the other APIs."""
