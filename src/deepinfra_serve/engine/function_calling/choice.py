"""The effective tool choice of a request, as an object (a function legitimately named `auto`
or `required` is still a named choice), resolved for every API alike by `resolve`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import invalid

Mode = Literal["none", "auto", "required", "named"]


@dataclass(frozen=True, slots=True)
class ToolChoice:
    mode: Mode
    name: str | None = None  # the function, when mode is "named"

    @property
    def forced(self) -> bool:
        """The answer must be a call (so generation is constrained to one)."""
        return self.mode in ("required", "named")

    def for_vllm(self) -> str | dict[str, Any]:
        if self.mode == "named":
            return {"type": "function", "function": {"name": self.name}}
        return self.mode


NONE = ToolChoice("none")
AUTO = ToolChoice("auto")


def resolve(
    asked: ToolChoice | None,
    names: Sequence[str],
    *,
    can_call: bool,
    name_field: str,
    auto_without_tools: bool = False,
) -> ToolChoice:
    """The effective choice of a request with tools `names` (`asked` None: it sent none), after
    refusing what cannot be served, each a 422 naming the field. `name_field` is where the
    API keeps a tool's name ({i}: its index); `auto_without_tools`: the API lets `auto` stand
    without tools (Anthropic's does, OpenAI's does not)."""
    if asked is None:
        asked = AUTO if names else NONE
    if not names:
        if asked.mode == "none" or (asked.mode == "auto" and auto_without_tools):
            return NONE
        raise invalid("tool_choice", "needs tools; none were given")
    if not can_call:
        raise invalid("tools", "function calling is not supported for this model")
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise invalid(name_field.format(i=i), f"{name!r} is defined twice")
        seen.add(name)
    if asked.mode == "named" and asked.name not in seen:
        raise invalid("tool_choice", f"names {asked.name!r}, which is not in tools")
    return asked
