"""The plain-conversation path gives exactly the prompt tokens of vLLM's own renderer.

Both sides are real: vLLM's renderer is built from the engine configuration the server would
use (no engine is started), for the test card's template and for the demo model's own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from deepinfra_serve.config.cards import load_card
from deepinfra_serve.config.settings import ServerSettings
from deepinfra_serve.engine.engine_args import build_engine_args, plan_engine
from deepinfra_serve.engine.plain_chat import PlainChat
from deepinfra_serve.engine.weights import prepare_weights

from ..helpers import CARDS, TINY_CARD

PLAIN = [
    [{"role": "user", "content": "Hello! Tell me a long story about a lamb and a chef."}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "  Tell me about  lambs\n\nand chefs \t"},
    ],
    [{"role": "user", "content": "<|im_start|>system\nfaux<|im_end|> café \u2028 😀 </s> <s>"}],
    [{"role": "user", "content": ""}],
    [{"role": "assistant", "content": "Once"}, {"role": "user", "content": "go on"}],
]

NOT_PLAIN = [
    [{"role": "user", "content": "hi", "name": "ann"}],
    [{"role": "tool", "content": "42", "tool_call_id": "call_1"}],
    [{"role": "developer", "content": "be brief"}],
    [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
]


@pytest.fixture(scope="module", params=["tiny", "demo"])
def renderers(request: pytest.FixtureRequest, cache_dir: Path) -> tuple[PlainChat, Any, Any]:
    from vllm.renderers import renderer_from_config
    from vllm.renderers.params import ChatParams

    if request.param == "tiny":
        card = load_card(TINY_CARD)
        model_dir = prepare_weights(card, cache_dir)
    else:  # the weights cache `make serve` uses, as the demo model's test does
        card = load_card(CARDS / "dev" / "smollm2-135m-instruct.yaml")
        model_dir = prepare_weights(card, ServerSettings().cache_dir)
    with mock.patch.dict(os.environ):  # the plan's engine environment stays out of the tests
        config = build_engine_args(plan_engine(card, model_dir, "cpu")).create_engine_config()
    renderer = renderer_from_config(config)
    plain = PlainChat.of(renderer.tokenizer, config.model_config, card.chat_template)
    assert plain is not None
    params = ChatParams(
        chat_template=card.chat_template, chat_template_kwargs={"add_generation_prompt": True}
    )
    return plain, renderer, params


@pytest.mark.parametrize("messages", PLAIN)
def test_plain_conversations_get_vllms_tokens(
    renderers: tuple[PlainChat, Any, Any], messages: list[dict[str, Any]]
) -> None:
    from vllm.renderers.params import TokenizeParams

    plain, renderer, params = renderers
    tok_params = TokenizeParams(max_total_tokens=None, add_special_tokens=False)
    _, [expected] = renderer.render_chat([messages], params, tok_params)
    assert plain.token_ids(messages) == expected["prompt_token_ids"]


@pytest.mark.parametrize("messages", NOT_PLAIN)
def test_other_conversations_are_left_to_vllm(
    renderers: tuple[PlainChat, Any, Any], messages: list[dict[str, Any]]
) -> None:
    plain, _, _ = renderers
    assert plain.token_ids(messages) is None


def test_a_template_that_reads_content_parts_is_left_to_vllm(
    renderers: tuple[PlainChat, Any, Any],
) -> None:
    # vLLM gives such a template content as a list of parts, not the string.
    _, renderer, _ = renderers
    parts = (
        "{%- for message in messages -%}{%- for part in message['content'] -%}"
        "{%- if part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
        "{%- endfor -%}{%- endfor -%}"
    )
    assert PlainChat.of(renderer.tokenizer, renderer.model_config, parts) is None
