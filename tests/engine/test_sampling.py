"""The request -> SamplingParams mapping, field by field (validation and mapping, no engine)."""

from __future__ import annotations

from typing import Any

import pytest
from vllm.sampling_params import RequestOutputKind

from deepinfra_serve.config.cards import load_card
from deepinfra_serve.engine.errors import APIError
from deepinfra_serve.engine.sampling import SamplingRequest, engine_seed, to_sampling_params
from deepinfra_serve.native.schema import PROFILE as NATIVE
from deepinfra_serve.openai.schema import CHAT_PROFILE, SamplingFields

from ..helpers import CARDS

MYTHOMAX = load_card(CARDS / "mythomax-l2-13b-turbo.yaml")
NEMO = load_card(CARDS / "mistral-nemo-instruct-2407.yaml")
PYGMALION = load_card(CARDS / "pygmalion-13b-4bit-128g.yaml")


def params(card: Any = MYTHOMAX, prompt_tokens: int = 10, streaming: bool = False, **fields: Any):
    """Through the OpenAI schema, as a request's fields arrive."""
    request = SamplingFields(stream=streaming, **fields).sampling()
    return to_sampling_params(request, card, prompt_tokens=prompt_tokens, profile=CHAT_PROFILE)


def test_deepinfra_defaults() -> None:
    p = params()
    assert (p.n, p.temperature, p.top_p, p.top_k, p.min_p) == (1, 1.0, 1.0, 0, 0.0)
    assert (p.repetition_penalty, p.presence_penalty, p.frequency_penalty) == (1.0, 0.0, 0.0)
    assert p.seed is None and p.stop == []
    # max_tokens left out: the context left (4096 - 10), under DeepInfra's 16384 cap.
    assert p.max_tokens == 4086
    assert p.output_kind == RequestOutputKind.FINAL_ONLY


def test_params_are_per_request_so_vllm_copies_them_shallowly() -> None:
    p = params(stop=["###"])
    copy = p.clone()  # what vLLM's add_request does with them
    assert p.skip_clone and copy is not p and copy.stop is p.stop
    assert params().stop is not params().stop  # no list is shared between requests


def test_card_defaults_apply_where_the_request_is_silent() -> None:
    p = params(PYGMALION)
    assert (p.temperature, p.top_p, p.max_tokens) == (0.7, 0.9, 512)
    p = params(PYGMALION, temperature=0.2, top_p=0.5, max_tokens=7)
    assert (p.temperature, p.top_p, p.max_tokens) == (0.2, 0.5, 7)
    assert params(NEMO).max_tokens == 512


@pytest.mark.parametrize(
    ("fields", "attr", "expected"),
    [
        ({"temperature": 0}, "temperature", 0.0),
        ({"temperature": 2}, "temperature", 2.0),
        ({"top_p": 0.1}, "top_p", 0.1),
        ({"top_k": 999}, "top_k", 999),
        ({"min_p": 1}, "min_p", 1.0),
        ({"repetition_penalty": 0.01}, "repetition_penalty", 0.01),
        ({"repetition_penalty": 5}, "repetition_penalty", 5.0),
        ({"presence_penalty": -2}, "presence_penalty", -2.0),
        ({"frequency_penalty": 2}, "frequency_penalty", 2.0),
        ({"n": 4}, "n", 4),
        ({"stop": "###"}, "stop", ["###"]),
        ({"stop": [f"s{i}" for i in range(16)]}, "stop", [f"s{i}" for i in range(16)]),
        ({"max_tokens": 1}, "max_tokens", 1),
        ({"max_tokens": 1_000_000}, "max_tokens", 4086),
        ({"seed": 0}, "seed", 0),
        ({"seed": 2**63 - 1}, "seed", 2**63 - 1),
        ({"seed": 16848278268029293276}, "seed", 16848278268029293276 - 2**63),
        ({"seed": -1}, "seed", 2**63 - 1),
    ],
)
def test_field_mapping(fields: dict[str, Any], attr: str, expected: Any) -> None:
    assert getattr(params(**fields), attr) == expected


def test_seed_fold_is_deterministic_and_non_negative() -> None:
    for seed in (-(2**63), -1, 0, 2**63, 2**64 - 1):
        folded = engine_seed(seed)
        assert folded is not None and 0 <= folded < 2**63
        assert engine_seed(seed) == folded


def test_streaming_asks_for_deltas() -> None:
    assert params(streaming=True).output_kind == RequestOutputKind.DELTA


@pytest.mark.parametrize(
    ("card", "fields", "param"),
    [
        (MYTHOMAX, {"stop": [f"s{i}" for i in range(17)]}, "stop"),
        (MYTHOMAX, {"stop": [""]}, "stop"),
        (NEMO, {"n": 3}, "n"),
        (MYTHOMAX, {"max_tokens": 0}, "max_tokens"),
    ],
)
def test_card_limits_are_enforced(card: Any, fields: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as info:
        params(card, **fields)
    assert info.value.status == 422
    assert info.value.param == param
    assert param in info.value.message


def test_prompt_longer_than_context_gives_the_numbers() -> None:
    with pytest.raises(APIError) as info:
        params(prompt_tokens=4096)
    assert info.value.status == 400
    assert "4096 prompt tokens" in info.value.message
    assert "context is 4096 tokens" in info.value.message


def test_explicit_null_max_tokens_means_context_left_capped() -> None:
    assert params(NEMO, prompt_tokens=100, max_tokens=None).max_tokens == 16384


def test_response_format_maps_to_structured_outputs() -> None:
    assert params().structured_outputs is None
    assert params(response_format={"type": "text"}).structured_outputs is None
    so = params(response_format={"type": "json_object"}).structured_outputs
    assert so.json_object is True
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    wrapped = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    assert params(response_format=wrapped).structured_outputs.json == schema
    bare = {"type": "json_schema", "json_schema": schema}
    assert params(response_format=bare).structured_outputs.json == schema
    so = params(response_format={"type": "regex", "regex": "[a-z]+"}).structured_outputs
    assert so.regex == "[a-z]+"


def test_logprobs_and_stop_token_ids_pass_through() -> None:
    p = to_sampling_params(
        SamplingRequest(logprobs=3, stop_token_ids=[2, 7]),
        MYTHOMAX,
        prompt_tokens=1,
        profile=CHAT_PROFILE,
    )
    assert (p.logprobs, p.stop_token_ids) == (3, [2, 7])
    assert params().logprobs is None


def test_stop_text_is_not_returned() -> None:
    assert params(stop=["###"]).include_stop_str_in_output is False


def test_native_profile_defaults_and_names() -> None:
    p = to_sampling_params(SamplingRequest(), MYTHOMAX, prompt_tokens=10, profile=NATIVE)
    assert (p.temperature, p.top_p, p.max_tokens) == (0.7, 0.9, 512)
    with pytest.raises(APIError) as info:
        to_sampling_params(SamplingRequest(n=3), NEMO, prompt_tokens=1, profile=NATIVE)
    assert info.value.param == "num_responses"
    assert info.value.message.startswith("num_responses:")
    with pytest.raises(APIError) as info:
        to_sampling_params(SamplingRequest(), MYTHOMAX, prompt_tokens=4096, profile=NATIVE)
    assert info.value.param == "input"


def test_what_the_engine_cannot_do_is_refused_by_name() -> None:
    with pytest.raises(APIError) as info:
        to_sampling_params(
            SamplingRequest(temperature=50.0), MYTHOMAX, prompt_tokens=1, profile=CHAT_PROFILE
        )
    assert info.value.status == 422
    assert info.value.param == "temperature"
