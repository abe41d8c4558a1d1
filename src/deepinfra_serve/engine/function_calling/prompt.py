"""Putting tools, calls and results into the conversation the chat template sees.

With the card's `template` format the template gets them as they are (Mistral's renders
[AVAILABLE_TOOLS], [TOOL_CALLS], [TOOL_RESULTS]). With the `prompt` format, which serves
models whose template knows nothing of tools (Alpaca, Llama 2), everything becomes text in
roles every template has: the tools a system message, a past call the JSON array the model is
asked to write, results a user message.
"""

from __future__ import annotations

import json
from typing import Any

from ...config.cards import ToolCalling
from .choice import ToolChoice

Message = dict[str, Any]


def tools_text(tc: ToolCalling, tools: list[dict[str, Any]], choice: ToolChoice) -> str:
    """The system text describing `tools` (function dicts), with what `choice` demands."""
    lines = "\n".join(
        json.dumps({k: v for k, v in f.items() if v is not None and k != "strict"}) for f in tools
    )
    text = tc.prompt.replace("{tools}", lines)
    if choice.mode == "required":
        text += "\nYou must call at least one function now."
    elif choice.mode == "named":
        text += f'\nYou must call the function "{choice.name}" now.'
    return text


def _calls_text(calls: list[dict[str, Any]]) -> str:
    out = []
    for c in calls:
        f = c["function"]
        try:
            args = json.loads(f["arguments"])
        except ValueError:
            args = f["arguments"]
        out.append({"name": f["name"], "parameters": args})
    return json.dumps(out, ensure_ascii=False)


def as_text(
    messages: list[Message],
    tc: ToolCalling,
    tools: list[dict[str, Any]] | None,
    choice: ToolChoice,
) -> list[Message]:
    """The conversation for a template that knows no tools (the `prompt` format)."""
    names: dict[str, str] = {}
    out: list[Message] = []
    for m in messages:
        role = m["role"]
        if role == "assistant" and m.get("tool_calls"):
            for c in m["tool_calls"]:
                names[c["id"]] = c["function"]["name"]
            content = m.get("content") or ""
            text = (content + "\n" if content else "") + _calls_text(m["tool_calls"])
            out.append({"role": "assistant", "content": text})
        elif role == "tool":
            call_id = m.get("tool_call_id", "")
            name = names.get(call_id)
            head = f"Result of {name} (call {call_id}):" if name else f"Result of call {call_id}:"
            result = f"{head}\n{m['content']}"
            if out and out[-1].get("_results"):  # consecutive results make one message
                out[-1]["content"] += "\n\n" + result
            else:
                out.append({"role": "user", "content": result, "_results": True})
        else:
            out.append(dict(m))
    for m in out:
        m.pop("_results", None)
    if tools:
        text = tools_text(tc, tools, choice)
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{text}"}
        else:
            out.insert(0, {"role": "system", "content": text})
    return out


def for_mistral(messages: list[Message]) -> list[Message]:
    """Mistral's tokenizer takes call ids of 9 characters; longer ones keep their last 9, as
    vLLM's own server does."""
    out = []
    for m in messages:
        if m.get("tool_calls"):
            m = {
                **m,
                "tool_calls": [{**c, "id": c["id"][-9:]} for c in m["tool_calls"]],
            }
        if m.get("tool_call_id"):
            m = {**m, "tool_call_id": m["tool_call_id"][-9:]}
        out.append(m)
    return out


def conversation(
    tc: ToolCalling | None,
    messages: list[Message],
    tools: list[dict[str, Any]] | None,
    choice: ToolChoice,
    mistral: bool,
) -> tuple[list[Message], list[dict[str, Any]] | None]:
    """The messages for the chat template and the tools it is given (OpenAI tool dicts).

    `tools` is None when the model is not to see any (no tools, or tool_choice none).
    """
    if mistral:
        messages = for_mistral(messages)
    if tc is None:
        return messages, None
    if tc.format == "prompt":
        if not tools and not any(m["role"] == "tool" or m.get("tool_calls") for m in messages):
            return messages, None  # a plain chat: nothing to rewrite
        functions = [t["function"] for t in tools] if tools else None
        return as_text(messages, tc, functions, choice), None
    return messages, tools
