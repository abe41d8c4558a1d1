"""POST /v1/inference/{model}: DeepInfra's native text-generation API on the real CPU engine."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from deepinfra_serve.config.cards import ModelCard
from deepinfra_serve.native.schema import InferenceResponse, StreamEvent

from .. import helpers
from ..helpers import INFERENCE as URL

EOS = "<|im_end|>"


@pytest.fixture(scope="module")
def tokenizer(cache_dir: Path, base_url: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(cache_dir / "deepinfra-serve--tiny-random-llama")


def infer(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post(URL, json=body)


def stream(client: httpx.Client, **body: Any) -> list[StreamEvent]:
    data = helpers.stream(client, URL, StreamEvent, **body)
    return [StreamEvent.model_validate_json(d) for d in data]


def test_plain_response_fields(client: httpx.Client, tiny_card: ModelCard) -> None:
    # Seeded: the token count is asserted exactly, and an unseeded draw may end early at EOS.
    r = infer(client, input="[INST] Just say hi! [/INST] ", max_new_tokens=6, seed=3)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {
        "request_id",
        "inference_status",
        "results",
        "num_tokens",
        "num_input_tokens",
    }
    assert re.fullmatch("[A-Za-z0-9]{24}", body["request_id"])
    status = body["inference_status"]
    assert set(status) == {
        "status",
        "runtime_ms",
        "cost",
        "tokens_generated",
        "tokens_input",
        "tokens_input_cached",
    }
    assert status["tokens_input_cached"] == 0  # a prompt shorter than one cache block
    assert status["status"] == "succeeded"
    assert status["runtime_ms"] >= 0
    assert status["tokens_generated"] == body["num_tokens"] == 6
    assert status["tokens_input"] == body["num_input_tokens"]
    p = tiny_card.pricing
    expected = (body["num_input_tokens"] * p.input_usd_per_mtok + 6 * p.output_usd_per_mtok) / 1e6
    assert status["cost"] == pytest.approx(expected, abs=1e-12)
    [result] = body["results"]
    assert isinstance(result["generated_text"], str)


def test_token_counts_include_the_end_of_sequence_token(
    client: httpx.Client, tokenizer: Any
) -> None:
    # The regex leaves the model nothing to say after "Hi!" but end-of-sequence, like the
    # reference's "Hi!" example, which counts 3 tokens for " Hi", "!" and "</s>".
    body = infer(
        client, input="Just say hi!", response_format={"type": "regex", "regex": "Hi!"}
    ).json()
    assert body["results"] == [{"generated_text": "Hi!"}]
    text_tokens = len(tokenizer("Hi!", add_special_tokens=False)["input_ids"])
    assert body["num_tokens"] == body["inference_status"]["tokens_generated"] == text_tokens + 1
    # The input is tokenized with the model's special tokens (BOS), as on DeepInfra.
    assert body["num_input_tokens"] == len(tokenizer("Just say hi!")["input_ids"])


def test_num_responses(client: httpx.Client) -> None:
    body = infer(client, input="Hi", max_new_tokens=3, num_responses=2, seed=3).json()
    assert len(body["results"]) == 2
    assert body["num_tokens"] == 6


def test_streaming_events(client: httpx.Client, tokenizer: Any) -> None:
    events = stream(client, input="Hello", max_new_tokens=10, temperature=0)
    *tokens, last = events
    assert len(events) == 10
    assert all(e.generated_text is None and e.details is None for e in tokens)
    assert last.details is not None and last.generated_text is not None
    assert last.details.finish_reason == "length"
    assert last.details.generated_tokens == 10
    assert last.details.input_tokens == len(tokenizer("Hello")["input_ids"])
    assert 0 <= last.details.seed < 2**64
    # Real ids and logprobs from the engine: the ids decode to the text, and the texts join up.
    ids = [e.token.id for e in events]
    assert tokenizer.decode(ids, skip_special_tokens=True) == last.generated_text
    assert "".join(e.token.text for e in events if not e.token.special) == last.generated_text
    assert all(e.token.logprob <= 0 and not e.token.special for e in events)
    plain = infer(client, input="Hello", max_new_tokens=10, temperature=0).json()
    assert plain["results"][0]["generated_text"] == last.generated_text


def test_stream_ends_with_the_special_eos_token(client: httpx.Client) -> None:
    events = stream(client, input="Say hi", response_format={"type": "regex", "regex": "Hi!"})
    last = events[-1]
    assert last.token.special is True and last.token.text == EOS
    assert last.generated_text == "Hi!"
    assert last.details is not None and last.details.finish_reason == "eos_token"
    assert last.details.generated_tokens == len(events)
    assert "".join(e.token.text for e in events[:-1]) == "Hi!"


def test_stream_stop_sequence(client: httpx.Client) -> None:
    whole = infer(client, input="Hello", max_new_tokens=24, temperature=0).json()
    text = whole["results"][0]["generated_text"]
    start = next(i for i in range(3, len(text) - 2) if text.find(text[i : i + 2]) == i)
    events = stream(
        client, input="Hello", max_new_tokens=24, temperature=0, stop=[text[start : start + 2]]
    )
    assert events[-1].details is not None
    assert events[-1].details.finish_reason == "stop_sequence"
    assert events[-1].generated_text == text[:start]


def test_same_request_different_seeds(client: httpx.Client) -> None:
    seeds = {stream(client, input="Hi", max_new_tokens=2)[-1].details.seed for _ in range(3)}  # type: ignore[union-attr]
    assert len(seeds) == 3


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"temperature": 100.5}, "temperature"),
        ({"temperature": 50}, "temperature"),  # DeepInfra allows it; vLLM stops at 2
        ({"top_p": 0}, "top_p"),
        ({"top_k": 100_000}, "top_k"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 100_001}, "max_new_tokens"),
        ({"repetition_penalty": 5.5}, "repetition_penalty"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"stop": [str(i) for i in range(17)]}, "stop"),
        ({"num_responses": 5}, "num_responses"),
        ({"num_responses": 4}, "num_responses"),  # the tiny card's max_n is 3
        ({"num_responses": 2, "stream": True}, "num_responses"),
        ({"webhook": "ftp://example.org/hook"}, "webhook"),
        ({"webhook": "not a url"}, "webhook"),
        ({"webhook": "http://127.0.0.1:9/hook", "stream": True}, "webhook"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
        ({"input": None}, "input"),
    ],
)
def test_bad_fields_get_deepinfras_error_shape(
    client: httpx.Client, body: dict[str, Any], field: str
) -> None:
    r = infer(client, **{"input": "Hi", "max_new_tokens": 2, **body})
    assert r.status_code == 422, r.text
    error = r.json()
    assert set(error) == {"error"}
    assert field in error["error"]


def test_over_long_input_gives_the_numbers(client: httpx.Client) -> None:
    r = infer(client, input="lamb " * 1200)
    assert r.status_code == 400
    assert "the model's context is 1024 tokens" in r.json()["error"]


def test_unknown_model_is_404(client: httpx.Client) -> None:
    r = client.post("/v1/inference/nobody/nothing", json={"input": "Hi"})
    assert r.status_code == 404
    assert r.json() == {"error": "The model `nobody/nothing` does not exist"}


def test_response_model_matches(client: httpx.Client) -> None:
    InferenceResponse.model_validate(infer(client, input="Hi", max_new_tokens=2).json())
