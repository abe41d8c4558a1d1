"""The effective tool choice of a chat request, as an object: a function legitimately named
`auto` or `required` is still a named choice."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

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
