"""Log-probabilities with their alternatives (`top_logprobs`), a bias on chosen tokens
(`logit_bias`), and the reasoning fields these models accept without effect, on the real
engine: chat and completions alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from openai.types.chat import ChatCompletionChunk

from deepinfra_serve.config.cards import ModelCard

from ..helpers import CHAT, COMPLETIONS, HELLO, MODEL, events, stream, tiny_chat_prompt

ASK = {"model": MODEL, "messages": HELLO, "max_tokens": 4, "temperature": 0}


def _alternatives(content: list[dict[str, Any]]) -> list[list[float]]:
    return [[alt["logprob"] for alt in item["top_logprobs"]] for item in content]


def test_top_logprobs_answers_that_many_alternatives_per_token_streamed_or_not(
    client: httpx.Client,
) -> None:
    body = {**ASK, "logprobs": True, "top_logprobs": 3}
    whole = client.post(CHAT, json=body).json()["choices"][0]["logprobs"]["content"]
    assert len(whole) == 4
    for item, alternatives in zip(whole, _alternatives(whole), strict=True):
        assert len(alternatives) == 3 and alternatives == sorted(alternatives, reverse=True)
        # Greedy: the chosen token is the most likely one, first among its alternatives.
        assert item["top_logprobs"][0]["token"] == item["token"]
        assert item["top_logprobs"][0]["logprob"] == item["logprob"]
    chunks = events(stream(client, CHAT, ChatCompletionChunk, **body))
    streamed = [
        item
        for c in chunks
        if c["choices"] and c["choices"][0]["logprobs"] is not None
        for item in c["choices"][0]["logprobs"]["content"]
    ]
    assert [i["token"] for i in streamed] == [i["token"] for i in whole]
    assert [len(a) for a in _alternatives(streamed)] == [3] * 4
    # Without top_logprobs, the chosen tokens only.
    plain = client.post(CHAT, json={**ASK, "logprobs": True}).json()
    assert all(i["top_logprobs"] == [] for i in plain["choices"][0]["logprobs"]["content"])


def test_a_logit_bias_of_minus_100_keeps_the_greedy_first_token_out(
    client: httpx.Client, tiny_card: ModelCard, cache_dir: Path
) -> None:
    # The chat prompt as token ids: completions name the greedy first token by its id.
    ids = tiny_chat_prompt(cache_dir, tiny_card, HELLO)
    named = {"model": MODEL, "prompt": ids, "max_tokens": 1, "temperature": 0, "logprobs": 0}
    named |= {"return_tokens_as_token_ids": True}

    def first_id(**extra: Any) -> int:
        answer = client.post(COMPLETIONS, json=named | extra).json()
        return int(answer["choices"][0]["logprobs"]["tokens"][0].removeprefix("token_id:"))

    def first_chat_text(**extra: Any) -> str:
        answer = client.post(CHAT, json={**ASK, "max_tokens": 1, **extra}).json()
        return str(answer["choices"][0]["message"]["content"])

    greedy = first_id()
    bias = {"logit_bias": {str(greedy): -100}}
    assert first_id() == greedy  # greedy: the same token each time
    assert first_id(**bias) != greedy
    assert first_chat_text() == first_chat_text()
    assert first_chat_text(**bias) != first_chat_text()


def test_a_logit_bias_outside_the_vocabulary_is_refused_naming_it(client: httpx.Client) -> None:
    r = client.post(CHAT, json={**ASK, "logit_bias": {"10000000": 5}})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "logit_bias"


def test_reasoning_fields_are_accepted_and_change_nothing(client: httpx.Client) -> None:
    plain = client.post(CHAT, json=ASK).json()
    for extra in ({"reasoning_effort": "high"}, {"reasoning": {"effort": "low", "enabled": True}}):
        r = client.post(CHAT, json={**ASK, **extra})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"] == plain["choices"][0]["message"]
