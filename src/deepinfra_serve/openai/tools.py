"""What a chat request's tools and tool_choice must satisfy beyond their schema; each refusal
is a 422 that names the field."""

from __future__ import annotations

from ..config.cards import ModelCard
from ..engine.errors import invalid
from ..engine.function_calling.choice import ToolChoice, resolve
from .schema import ChatCompletionRequest


def tool_choice(req: ChatCompletionRequest, card: ModelCard) -> ToolChoice:
    """The request's effective tool choice, after refusing what cannot be served."""
    raw = req.tool_choice
    asked = (
        None
        if raw is None
        else ToolChoice(raw)
        if isinstance(raw, str)
        else ToolChoice("named", raw.function.name)
    )
    choice = resolve(
        asked,
        [t.function.name for t in req.tools or ()],
        can_call=card.tool_calling is not None,
        name_field="tools.{i}.function.name",
    )
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
