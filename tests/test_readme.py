"""Every HTTP example in the README runs against the SmolLM2 demo it is written for, and prints
what the README shows (ids, timestamps and timings aside).

An example is a `bash` block that calls `curl` on 127.0.0.1:8000, or a `python` block that
does, followed by the block of what it prints."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from typing import Any

import httpx
import pytest

from .helpers import ROOT

README = ROOT / "README.md"
BASE = "http://127.0.0.1:8000"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
# Values that differ on every run, whatever the model does.
# Cached prompt tokens too: they depend on what the server served before.
VOLATILE = {"id", "created", "request_id", "runtime_ms", "cached_tokens", "tokens_input_cached"}


def _examples() -> list[tuple[str, str, str]]:
    """(kind, code, output) of each example, in the README's order."""
    blocks = [(m[1], m[2]) for m in FENCE.finditer(README.read_text())]
    found = []
    for i, (lang, code) in enumerate(blocks):
        if BASE not in code or lang not in ("bash", "python"):
            continue
        kind = "curl" if lang == "bash" else "python"
        assert kind == "python" or code.startswith("curl "), code
        assert i + 1 < len(blocks) and blocks[i + 1][0] in ("json", "text"), (
            f"an example without its output: {code[:60]}"
        )
        found.append((kind, code, blocks[i + 1][1]))
    return found


EXAMPLES = _examples()


def _steady(value: Any) -> Any:
    """`value` with what differs on every run replaced by its key's name."""
    if isinstance(value, dict):
        return {
            k: f"<{k}>" if k in VOLATILE and isinstance(v, str | int) else _steady(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_steady(v) for v in value]
    return value


def _curl(code: str, base: str) -> httpx.Response:
    """The request a `curl` command line sends, sent to `base`."""
    args = shlex.split(code.replace("\\\n", " "))
    assert args[0] == "curl"
    headers, data, url = {}, None, None
    words = iter(args[1:])
    for word in words:
        if word == "-H":
            name, _, value = next(words).partition(":")
            headers[name.strip()] = value.strip()
        elif word == "-d":
            data = next(words)
        elif word == "-N":
            continue  # no buffering: httpx reads the whole body either way
        else:
            url = word
    assert url is not None and url.startswith(BASE), url
    url = base + url.removeprefix(BASE)
    with httpx.Client(timeout=120) as c:
        if data is None:
            return c.get(url, headers=headers)
        return c.post(url, headers=headers, content=data)


def _events(text: str) -> list[Any]:
    """A stream's events: JSON data parsed, `[DONE]` kept as it is."""
    events = []
    for line in text.splitlines():
        if line:
            assert line.startswith("data: "), line
            data = line.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_the_readme_has_examples_of_each_api() -> None:
    code = " ".join(code for _, code, _ in EXAMPLES)
    assert len(EXAMPLES) >= 7
    for route in ("/v1/openai/chat/completions", "/v1/inference/", "/health/ready"):
        assert route in code


@pytest.mark.parametrize(("kind", "code", "output"), EXAMPLES, ids=[c[:50] for _, c, _ in EXAMPLES])
def test_a_readme_example_prints_what_the_readme_shows(
    demo_url: str, kind: str, code: str, output: str
) -> None:
    if kind == "python":
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code.replace(BASE, demo_url), "README.md", "exec"), {})
        assert printed.getvalue() == output
        return
    r = _curl(code, demo_url)
    if r.headers["content-type"].startswith("text/event-stream"):
        assert _steady(_events(r.text)) == _steady(_events(output))
    else:
        assert _steady(r.json()) == _steady(json.loads(output))
