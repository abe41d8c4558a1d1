"""The official `openai` client against the real server, streaming and not."""

from __future__ import annotations

import openai
import pytest

from ..helpers import HELLO, MODEL


@pytest.fixture(scope="module")
def oai(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1/openai", api_key="unused", max_retries=0)


def test_non_streaming(oai: openai.OpenAI) -> None:
    resp = oai.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8, temperature=0)
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].finish_reason in ("stop", "length")
    assert resp.usage is not None
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert resp.usage.model_extra is not None and resp.usage.model_extra["estimated_cost"] > 0


def test_streaming(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=8, temperature=0, stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    whole = oai.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8, temperature=0)
    assert text == whole.choices[0].message.content


def test_models(oai: openai.OpenAI) -> None:
    assert [m.id for m in oai.models.list()] == [MODEL, f"{MODEL}-pirate"]


def test_errors_surface_as_typed_exceptions(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        oai.chat.completions.create(model="nobody/nothing", messages=HELLO)
    assert "nobody/nothing" in str(info.value)
    with pytest.raises(openai.UnprocessableEntityError):
        oai.chat.completions.create(model=MODEL, messages=HELLO, temperature=9)
