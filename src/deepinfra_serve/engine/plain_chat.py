"""Prompt tokens for a plain conversation, without vLLM's general renderer.

Most chat requests are a few text messages from the system, the user and the assistant, with no
tools, images or template arguments. vLLM's renderer handles every kind of request (content
parts, multimodal trackers, role conversions, a pool of tokenizer copies for its threads); for
such a prompt the same template rendered by transformers' own function and the text tokenized
by the Rust tokenizer cost a third of it (docs/architecture.md). Everything else still goes
through vLLM, and both give the same tokens (tested).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

PLAIN_ROLES = frozenset({"system", "user", "assistant"})


class PlainChat:
    """The model's chat template, resolved as vLLM resolves it, and its Rust tokenizer."""

    __slots__ = ("_backend", "_template", "_template_kwargs")

    def __init__(self, template: str, special_tokens: dict[str, Any], backend: Any) -> None:
        self._template = template
        self._template_kwargs = {**special_tokens, "add_generation_prompt": True}
        self._backend = backend

    @classmethod
    def of(cls, tokenizer: Any, model_config: Any, chat_template: str | None) -> PlainChat | None:
        """None where vLLM's renderer must do it all: a tokenizer without a Rust backend
        (Mistral's), no template, a template that reads content as a list of parts (vLLM turns
        text into parts for it), or a tokenizer that tokenizes special-token text as text."""
        from .vllm_seam import resolve_chat_template, resolve_chat_template_content_format

        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None or getattr(tokenizer, "split_special_tokens", False):
            return None
        try:
            template = resolve_chat_template(
                tokenizer, chat_template, None, model_config=model_config
            )
        except Exception:  # vLLM raises for a tokenizer without a template; so will requests
            log.debug("no chat template for the plain path", exc_info=True)
            return None
        if template is None:
            return None
        content_format = resolve_chat_template_content_format(
            chat_template, None, "auto", tokenizer, model_config=model_config
        )
        if content_format != "string":
            return None
        return cls(template, dict(tokenizer.special_tokens_map), backend)

    def token_ids(self, messages: list[dict[str, Any]]) -> list[int] | None:
        """The prompt's tokens, or None when the conversation is not plain."""
        for message in messages:
            if (
                len(message) != 2
                or message.get("role") not in PLAIN_ROLES
                or not isinstance(message.get("content"), str)
            ):
                return None
        from transformers.utils.chat_template_utils import render_jinja_template

        # (the texts, the generation indices)
        rendered, _ = render_jinja_template(
            conversations=[messages], chat_template=self._template, **self._template_kwargs
        )
        text: str = rendered[0]  # one conversation, one text
        return self._backend.encode(text, add_special_tokens=False).ids
