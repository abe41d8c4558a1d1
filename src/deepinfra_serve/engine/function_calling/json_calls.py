"""Reading calls written as JSON: `[{"name": ..., "parameters": {...}}, ...]` or one object.

Pure Python, shared by the vLLM tool parser (`json_parser`) for whole and streamed outputs, so
that both read an answer the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Call:
    name: str
    arguments: str  # a JSON object as text


def read_call(text: str, names: set[str]) -> Call | None:
    """One call object, or None when the object is not a call of a known function."""
    try:
        obj = json.loads(text, strict=False)  # raw control characters in strings, too
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("name") not in names:
        return None
    args = obj.get("parameters", obj.get("arguments", {}))
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = json.loads(args, strict=False)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return Call(obj["name"], json.dumps(args, ensure_ascii=False))


@dataclass
class CallScanner:
    """Finds each complete call object in a growing JSON text, character by character.

    The text is the whole output so far; only what was added since the last `feed` is read.
    """

    pos: int = 0
    depth: int = 0
    in_string: bool = False
    escaped: bool = False
    root: str = ""
    start: int | None = None
    objects: list[str] = field(default_factory=list)

    def feed(self, text: str) -> list[str]:
        """The call-level objects completed by the new text."""
        done: list[str] = []
        call_depth = 2 if self.root == "[" else 1
        for i in range(self.pos, len(text)):
            c = text[i]
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif c == "\\":
                    self.escaped = True
                elif c == '"':
                    self.in_string = False
            elif c == '"':
                self.in_string = True
            elif c in "[{":
                if not self.root:
                    self.root = c
                    call_depth = 2 if c == "[" else 1
                self.depth += 1
                if c == "{" and self.depth == call_depth:
                    self.start = i
            elif c in "]}":
                self.depth -= 1
                if c == "}" and self.start is not None and self.depth == call_depth - 1:
                    done.append(text[self.start : i + 1])
                    self.start = None
        self.pos = len(text)
        self.objects += done
        return done


def starts_calls(text: str) -> bool | None:
    """Whether an output is written as calls: None while it is only whitespace."""
    head = text.lstrip()
    if not head:
        return None
    return head[0] in "[{"


def read_calls(text: str, names: set[str], parallel: bool = True) -> list[Call]:
    """The calls at the start of an output, up to the first object that is not one."""
    if not starts_calls(text):
        return []
    scanner = CallScanner()
    scanner.feed(text)
    calls: list[Call] = []
    for obj in scanner.objects:
        call = read_call(obj, names)
        if call is None:
            break
        calls.append(call)
        if not parallel:
            break
    return calls


def tool_names(tools: list[Any]) -> set[str]:
    return {t.function.name for t in tools if getattr(t, "function", None) is not None}
