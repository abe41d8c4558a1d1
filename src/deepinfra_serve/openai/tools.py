"""What a chat request's tools and tool_choice must satisfy beyond their schema; each refusal
is a 422 that names the field."""

from __future__ import annotations

from ..config.cards import ModelCard
from ..engine.errors import invalid
from ..engine.function_calling.choice import AUTO, NONE, ToolChoice
from .schema import ChatCompletionRequest


def tool_choice(req: ChatCompletionRequest, card: ModelCard) -> ToolChoice:
    """The request's effective tool choice, after refusing what cannot be served."""
    tools = req.tools or []
    raw = req.tool_choice
    if raw is None:
        choice = AUTO if tools else NONE
    elif isinstance(raw, str):
        choice = ToolChoice(raw)
    else:
        choice = ToolChoice("named", raw.function.name)
    if not tools:
        if choice.mode != "none":
            raise invalid("tool_choice", "needs tools; none were given")
        return choice
    if card.tool_calling is None:
        raise invalid("tools", "function calling is not supported for this model")
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        name = tool.function.name
        if name in seen:
            raise invalid(f"tools.{i}.function.name", f"{name!r} is defined twice")
        seen.add(name)
    if choice.mode == "named" and choice.name not in seen:
        raise invalid("tool_choice", f"names function {choice.name!r}, which is not in tools")
    if choice.mode == "none":
        return choice
    rf = req.response_format
    if choice.forced and rf is not None and rf.type != "text":
        raise invalid(
            "response_format",
            "cannot be combined with a forced tool_choice; the call's schema shapes the answer",
        )
    if req.logprobs:
        raise invalid("logprobs", "not available together with tools")
    return choice
