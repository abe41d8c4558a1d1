"""Native inference: raw input -> sampling -> generation -> DeepInfra's response, a TGI-style
stream, or a webhook delivery."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable
from typing import Any, Self

import orjson

from ..config.pricing import Usage
from ..config.settings import ServerSettings, parse_networks
from ..engine.call import Call, Outcome
from ..engine.errors import APIError
from ..engine.generation import LOGPROB_FLOOR, Generation, Stream
from ..engine.lifecycle import Lifecycle
from ..engine.sampling import to_sampling_params
from ..engine.served_model import ServedModel
from ..store.database import Store
from ..store.webhook_jobs import WebhookJob
from .schema import PROFILE, GeneratedText, InferenceRequest, InferenceResponse, InferenceStatus
from .webhook_targets import WebhookTargets
from .webhooks import Journal, WebhookSender

log = logging.getLogger(__name__)


def tgi_finish_reason(o: Any) -> str:
    """vLLM's finish and stop reasons -> TGI's: EOS, a stop string or token, or the budget."""
    if o.finish_reason == "length":
        return "length"
    return "eos_token" if o.stop_reason is None else "stop_sequence"


def _token_texts(o: Any, special: dict[int, str]) -> list[str]:
    """Each new token's share of the text the engine added in this step.

    The engine's detokenized delta (`o.text`) is the truth: it holds characters whose bytes
    span several tokens and leaves out a trimmed stop sequence. A step usually brings one
    token; when it brings several, the per-token decodings are used while they agree with
    the delta, and the last token takes the rest, so the texts always join to generated_text.
    Special tokens show their own text ("</s>"), which the delta leaves out.
    """
    ids = o.token_ids
    if len(ids) == 1:
        return [o.text or special.get(ids[0], "")]
    texts: list[str] = []
    used = 0
    for i, token_id in enumerate(ids[:-1]):
        piece = o.logprobs[i][token_id].decoded_token or ""
        if token_id in special or not o.text.startswith(piece, used):
            piece = ""
        texts.append(piece)
        used += len(piece)
    texts.append(o.text[used:] or special.get(ids[-1], ""))
    return texts


class InferenceService:
    def __init__(self, model: ServedModel, webhooks: WebhookSender) -> None:
        self.model = model
        self.card = model.card
        self.webhooks = webhooks

    @classmethod
    def start(
        cls,
        model: ServedModel,
        lifecycle: Lifecycle,
        settings: ServerSettings,
        store: Store | None = None,
    ) -> Self:
        journal = None if store is None else Journal(store, store.runner, settings.batch_lease_s)
        webhooks = WebhookSender(
            model=model.card.name,
            lifecycle=lifecycle,
            targets=WebhookTargets(parse_networks(settings.webhook_allowed_networks)),
            attempts=settings.webhook_attempts,
            timeout_s=settings.webhook_timeout_s,
            backoff_s=settings.webhook_backoff_s,
            journal=journal,
        )
        return cls(model, webhooks)

    async def aclose(self) -> None:
        """At shutdown, after the drain: webhook jobs still running end (`WebhookSender`)."""
        await self.webhooks.aclose()

    async def create(
        self, call: Call[InferenceService, InferenceRequest]
    ) -> InferenceResponse | Stream:
        req, record = call.body, call.record
        if req.stream and req.num_responses > 1:
            raise APIError(422, "num_responses: must be 1 when streaming", param="num_responses")
        if req.stream and req.webhook is not None:
            raise APIError(422, "webhook: not allowed with stream", param="webhook")
        if req.webhook is not None:
            await self.webhooks.check(str(req.webhook))
        started = time.monotonic()
        record.capture("input", req.input)
        prompt = await self.model.prompts.text(req.input)
        request_id = record.request_id
        if req.webhook is not None:
            # Run again with no client waiting, as a job of its own that is billed and logged
            # when its generation ends; this request is answered and accounted as queued.
            record.finish_reason = "queued"
            prompt_tokens = len(prompt["prompt_token_ids"])
            again = req.model_copy(update={"webhook": None})
            await self.webhooks.keep(
                WebhookJob(
                    request_id,
                    self.card.name,
                    call.params["model"],
                    again.model_dump_json(exclude_unset=True),
                    str(req.webhook),
                    "" if call.tenant is None else call.tenant.owner,
                    record.tier.name,
                    None if record.trace is None else record.trace.traceparent(),
                )
            )
            self.webhooks.submit(
                str(req.webhook),
                request_id,
                call.detach(again),
                lambda reason: _failed(request_id, prompt_tokens, started, reason),
            )
            return InferenceResponse(
                request_id=request_id,
                inference_status=InferenceStatus(status="queued", tokens_input=prompt_tokens),
                num_input_tokens=prompt_tokens,
            )
        seed = secrets.randbits(64)
        params = to_sampling_params(
            req.sampling(seed),
            self.card,
            prompt_tokens=len(prompt["prompt_token_ids"]),
            profile=PROFILE,
        )
        gen = Generation(self.model, prompt, params, request_id, record, finish=tgi_finish_reason)
        await gen.start()
        if req.stream:
            return self._stream(gen, seed)
        return _response(request_id, await gen.final(), gen.usage(), started)

    def resume(self, job: WebhookJob, generate: Awaitable[Outcome]) -> None:
        """A job its first runner did not finish (it died): run (`generate`) and delivered
        here, and then forgotten."""
        self.webhooks.kept.add(job.request_id)
        started = time.monotonic()
        self.webhooks.submit(
            job.webhook,
            job.request_id,
            generate,
            lambda reason: _failed(job.request_id, 0, started, reason),
        )

    def _stream(self, gen: Generation, seed: int) -> Stream:
        """One event per token with its real id and logprob; the last one also carries the
        whole text and the details, as TGI's generate_stream does. The events of one engine
        step go out in one write."""
        special = self.model.prompts.special_tokens
        generated = ""

        def frame(o: Any) -> bytes:
            nonlocal generated
            generated += o.text
            ids = o.token_ids
            last = len(ids) - 1 if o.finish_reason is not None else -1
            texts = _token_texts(o, special)
            count = gen.completion_tokens - len(ids)
            events: list[bytes] = []
            for i, token_id in enumerate(ids):
                count += 1
                event: dict[str, Any] = {
                    "token": {
                        "id": token_id,
                        "text": texts[i],
                        "logprob": max(o.logprobs[i][token_id].logprob, LOGPROB_FLOOR),
                        "special": token_id in special,
                    },
                    "generated_text": None,
                    "details": None,
                }
                if i == last:
                    event["generated_text"] = generated
                    event["details"] = {
                        "finish_reason": gen.finish_reason(o),
                        "generated_tokens": count,
                        "input_tokens": gen.prompt_tokens,
                        "cached_input_tokens": gen.cached_tokens,
                        "seed": seed,
                    }
                events.append(b"data: " + orjson.dumps(event) + b"\n\n")
            return events[0] if len(events) == 1 else b"".join(events)

        return Stream(gen, frame)


def _response(
    request_id: str, choices: list[Any], usage: Usage, started: float
) -> InferenceResponse:
    # Token counts include the end-of-sequence token, as DeepInfra's "Hi!" example does.
    return InferenceResponse(
        request_id=request_id,
        inference_status=InferenceStatus(
            status="succeeded",
            runtime_ms=round((time.monotonic() - started) * 1000),
            cost=usage.estimated_cost,
            tokens_generated=usage.completion_tokens,
            tokens_input=usage.prompt_tokens,
            tokens_input_cached=usage.cached_tokens,
        ),
        results=[GeneratedText(generated_text=o.text) for o in choices],
        num_tokens=usage.completion_tokens,
        num_input_tokens=usage.prompt_tokens,
    )


def _failed(request_id: str, prompt_tokens: int, started: float, reason: str) -> bytes:
    return (
        InferenceResponse(
            request_id=request_id,
            inference_status=InferenceStatus(
                status="failed",
                runtime_ms=round((time.monotonic() - started) * 1000),
                tokens_input=prompt_tokens,
            ),
            num_input_tokens=prompt_tokens,
            error=reason,
        )
        .model_dump_json(exclude_none=True)
        .encode()
    )
