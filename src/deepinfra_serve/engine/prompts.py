"""A card's prompts: conversations and raw text turned into the engine's prompt tokens.

Conversations go through vLLM's renderer with the model's chat template, so Mistral's tokenizer
mode and Hugging Face templates behave as in vLLM's own server; a short plain conversation takes
a shorter way to the same tokens (`plain_chat`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import cached_property
from typing import Any

from jinja2 import TemplateError

from ..config.cards import ModelCard
from .errors import APIError
from .plain_chat import PlainChat

log = logging.getLogger(__name__)

# vLLM renders and tokenizes on a thread pool so that a long prompt does not hold the event
# loop. For a short one the thread hops (template, then tokens) cost more than the work itself,
# and the worker competes for the GIL with the loop: a prompt up to this many characters of
# text is rendered inline (well under a millisecond of work).
INLINE_PROMPT_CHARS = 2048


class Prompts:
    """Renders prompts for one engine as the card says, with the engine's renderer and
    tokenizer (not the engine itself, which `ServedModel.shutdown` must be able to let go of)."""

    def __init__(self, card: ModelCard, engine: Any) -> None:
        from .vllm_seam import ChatParams, TokenizeParams

        self.card = card
        self._renderer = engine.renderer
        self._tokenizer = engine.get_tokenizer()
        self._model_config = engine.model_config
        self._chat_params = ChatParams(
            chat_template=card.chat_template,
            chat_template_kwargs={"add_generation_prompt": True},
        )
        # Length is checked by the sampling adapter, which reports the numbers.
        self._tok_params = TokenizeParams(max_total_tokens=None, add_special_tokens=False)
        self._cmpl_tok_params = TokenizeParams(max_total_tokens=None, add_special_tokens=True)
        self._check_chat_template()
        self._plain = PlainChat.of(engine.get_tokenizer(), engine.model_config, card.chat_template)

    def _check_chat_template(self) -> None:
        # Without a template every chat request would fail; say so once, at start.
        if "openai" not in self.card.apis or self.card.chat_template is not None:
            return
        tokenizer = self._tokenizer
        if self.card.engine.tokenizer_mode != "mistral" and not getattr(
            tokenizer, "chat_template", None
        ):
            raise RuntimeError(
                f"{self.card.name}: the tokenizer has no chat template; set chat_template "
                "in the model card or drop 'openai' from its apis"
            )

    async def chat(
        self,
        messages: list[dict[str, Any]],
        template_kwargs: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Render a conversation into the engine's prompt (token ids included); `tools` are
        given to the template as Hugging Face and Mistral templates expect them."""
        params = self._chat_params
        if template_kwargs or tools:
            kwargs = {**(template_kwargs or {}), "add_generation_prompt": True}
            if tools:
                kwargs["tools"] = tools
            params = replace(params, chat_template_kwargs=kwargs)
        renderer = self._renderer
        try:
            if not tools and not template_kwargs and _text_size(messages) <= INLINE_PROMPT_CHARS:
                plain = self._plain
                if plain is not None and (ids := plain.token_ids(messages)) is not None:
                    return renderer.render_cmpl([{"prompt_token_ids": ids}], self._tok_params)[0]
                _, prompts = renderer.render_chat([messages], params, self._tok_params)
            else:
                _, prompts = await renderer.render_chat_async([messages], params, self._tok_params)
        except (ValueError, TypeError, KeyError, TemplateError) as exc:
            # Template errors (e.g. "roles must alternate") are the conversation's fault.
            raise APIError(400, f"messages: {exc}", param="messages") from exc
        return prompts[0]

    async def text(self, prompt: str | list[int]) -> dict[str, Any]:
        """A raw completion prompt: text is tokenized with the model's special tokens (BOS)."""
        if isinstance(prompt, str):
            raw: dict[str, Any] = {"prompt": prompt}
            params = self._cmpl_tok_params
        else:
            vocab = self.vocab_size
            if bad := [t for t in prompt if t >= vocab]:
                raise APIError(
                    422,
                    f"prompt: token id {bad[0]} is outside the vocabulary (size {vocab})",
                    param="prompt",
                )
            raw = {"prompt_token_ids": prompt}
            params = self._tok_params
        renderer = self._renderer
        if len(prompt) <= INLINE_PROMPT_CHARS:  # characters, or token ids (nothing to encode)
            [engine_prompt] = renderer.render_cmpl([raw], params)
        else:
            [engine_prompt] = await renderer.render_cmpl_async([raw], params)
        return engine_prompt

    @property
    def vocab_size(self) -> int:
        return self._model_config.get_vocab_size()

    @cached_property
    def special_tokens(self) -> dict[int, str]:
        """Special token ids and their text ("</s>"), which a plain decode leaves out."""
        tokenizer = self._tokenizer
        ids = list(getattr(tokenizer, "all_special_ids", []))
        return dict(zip(ids, tokenizer.convert_ids_to_tokens(ids), strict=True))

    def decode(self, token_ids: list[int]) -> str:
        return self._tokenizer.decode(token_ids)


def _text_size(messages: list[dict[str, Any]]) -> int:
    """Characters of text in a conversation; content given as parts, and tool calls, count as
    long (the inline path must stay short whatever the request holds)."""
    size = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            size += len(content)
        elif content is not None or message.get("tool_calls"):
            return INLINE_PROMPT_CHARS + 1
    return size
