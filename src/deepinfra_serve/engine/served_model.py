"""A card and the vLLM engine that runs it, shared by every API.

It turns messages into prompt tokens with the model's chat template (through vLLM's renderer,
so Mistral's tokenizer mode and Hugging Face templates behave as in vLLM's own server; a short
plain conversation takes a shorter way to the same tokens, `plain_chat`) and
starts engine requests; `generation` drives one from there. API formatting lives in the API
packages, not here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

from jinja2 import TemplateError

from ..config.cards import ModelCard
from .errors import APIError
from .plain_chat import PlainChat

# vLLM renders and tokenizes on a thread pool so that a long prompt does not hold the event
# loop. For a short one the thread hops (template, then tokens) cost more than the work itself,
# and the worker competes for the GIL with the loop: a prompt up to this many characters of
# text is rendered inline (about 0.1 ms of work).
INLINE_PROMPT_CHARS = 2048

if TYPE_CHECKING:
    from .function_calling.calls import FunctionCalling

log = logging.getLogger(__name__)


class EngineProgress:
    """When the engine last returned outputs. vLLM calls its stat loggers each time a batch of
    outputs arrives from the engine core, so a logger of our own is the cheapest beat: one
    clock read per engine step, none per token."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def stat_logger(self, vllm_config: Any, engine_index: int = 0) -> Any:
        """A vLLM `StatLoggerFactory`."""
        from vllm.v1.metrics.loggers import StatLoggerBase

        progress = self

        class ProgressLogger(StatLoggerBase):
            def __init__(self) -> None:
                pass

            def record(self, *args: Any, **kwargs: Any) -> None:
                progress.last = time.monotonic()

            def log_engine_initialized(self) -> None:
                pass

        return ProgressLogger()


class ServedModel:
    def __init__(
        self,
        card: ModelCard,
        engine: Any,
        functions: FunctionCalling | None = None,
        progress: EngineProgress | None = None,
    ) -> None:
        from vllm.renderers.params import ChatParams, TokenizeParams

        self.card = card
        self.engine = engine
        self.functions = functions  # None: the card has no tool format
        self.progress = progress or EngineProgress()  # fed by the engine's stat loggers
        self.plain_chat: PlainChat | None = None  # set once the engine runs
        self._chat_params = ChatParams(
            chat_template=card.chat_template,
            chat_template_kwargs={"add_generation_prompt": True},
        )
        # Length is checked by the sampling adapter, which reports the numbers.
        self._tok_params = TokenizeParams(max_total_tokens=None, add_special_tokens=False)
        self._cmpl_tok_params = TokenizeParams(max_total_tokens=None, add_special_tokens=True)

    @classmethod
    def start(cls, card: ModelCard, make_engine: Callable[[list[Any]], Any]) -> ServedModel:
        """`make_engine(stat_loggers)` builds the `AsyncLLM`: over an engine core of its own
        (`from_engine_args`) or as one of several clients of a shared one."""
        from .function_calling.calls import FunctionCalling

        progress = EngineProgress()
        # No local keeps the engine: something below may keep this frame (a stored traceback
        # or frame), and `shutdown` must be able to let go of the engine.
        model = cls(card, make_engine([progress.stat_logger]), None, progress)
        # vLLM reads its settings from os.environ on every access, some for every token of
        # every request (its per-token stats); its engine core caches them once started, and
        # so does this process, whose environment is settled by now.
        from vllm.envs import enable_envs_cache

        enable_envs_cache()
        try:
            model.functions = FunctionCalling.of(card, model.engine)
            model._check_chat_template()
            model.plain_chat = PlainChat.of(
                model.engine.get_tokenizer(), model.engine.model_config, card.chat_template
            )
        except Exception:
            model.shutdown()
            raise
        return model

    def _check_chat_template(self) -> None:
        # Without a template every chat request would fail; say so once, at start.
        if "openai" not in self.card.apis or self.card.chat_template is not None:
            return
        tokenizer = self.engine.get_tokenizer()
        if self.card.engine.tokenizer_mode != "mistral" and not getattr(
            tokenizer, "chat_template", None
        ):
            raise RuntimeError(
                f"{self.card.name}: the tokenizer has no chat template; set chat_template "
                "in the model card or drop 'openai' from its apis"
            )

    async def chat_prompt(
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
        renderer = self.engine.renderer
        try:
            if not tools and not template_kwargs and _text_size(messages) <= INLINE_PROMPT_CHARS:
                plain = self.plain_chat
                if plain is not None and (ids := plain.token_ids(messages)) is not None:
                    return renderer.render_cmpl([{"prompt_token_ids": ids}], self._tok_params)[0]
                _, prompts = renderer.render_chat([messages], params, self._tok_params)
            else:
                _, prompts = await renderer.render_chat_async([messages], params, self._tok_params)
        except (ValueError, TypeError, KeyError, TemplateError) as exc:
            # Template errors (e.g. "roles must alternate") are the conversation's fault.
            raise APIError(400, f"messages: {exc}", param="messages") from exc
        return prompts[0]

    async def text_prompt(self, prompt: str | list[int]) -> dict[str, Any]:
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
        renderer = self.engine.renderer
        if len(prompt) <= INLINE_PROMPT_CHARS:  # characters, or token ids (nothing to encode)
            [engine_prompt] = renderer.render_cmpl([raw], params)
        else:
            [engine_prompt] = await renderer.render_cmpl_async([raw], params)
        return engine_prompt

    @property
    def vocab_size(self) -> int:
        return self.engine.model_config.get_vocab_size()

    @cached_property
    def special_tokens(self) -> dict[int, str]:
        """Special token ids and their text ("</s>"), which a plain decode leaves out."""
        tokenizer = self.engine.get_tokenizer()
        ids = list(getattr(tokenizer, "all_special_ids", []))
        return dict(zip(ids, tokenizer.convert_ids_to_tokens(ids), strict=True))

    def decode(self, token_ids: list[int]) -> str:
        return self.engine.get_tokenizer().decode(token_ids)

    def generate(self, prompt: dict[str, Any], params: Any, request_id: str) -> AsyncIterator[Any]:
        return self.engine.generate(prompt, params, request_id)

    @property
    def has_work(self) -> bool:
        """Requests the engine has accepted and not finished (running or waiting)."""
        return self.engine.get_num_unfinished_requests() > 0

    def fail_in_flight(self, reason: str) -> None:
        """End every request waiting on the engine with an engine-dead error (what vLLM does
        itself when the engine core dies), for an engine that hangs instead."""
        from vllm.v1.engine.exceptions import EngineDeadError

        self.engine.output_processor.propagate_error(EngineDeadError(reason))

    @property
    def errored(self) -> bool:
        engine = getattr(self, "engine", None)  # None once shut down: stopped, not dead
        return engine is not None and bool(engine.errored)

    @staticmethod
    def own_engine(engine_args: Any) -> Callable[[list[Any]], Any]:
        """An engine over a core of its own, for `start`."""

        def make(stat_loggers: list[Any]) -> Any:
            from vllm.v1.engine.async_llm import AsyncLLM

            return AsyncLLM.from_engine_args(engine_args, stat_loggers=stat_loggers)

        return make

    def shutdown(self) -> None:
        """Stop the engine and let go of it. The thread pool that started it can keep this
        object until interpreter exit, where AsyncLLM.__del__ would run against torn-down
        modules and print a traceback; dropped here, it is collected while they are whole."""
        self.engine.shutdown()
        del self.engine


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
