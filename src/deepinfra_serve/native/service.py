"""Native inference: raw input -> shared adapter -> engine -> DeepInfra's response, TGI-style
stream, or a webhook delivery."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from ..errors import APIError
from ..observability import metrics
from ..observability.context import RequestRecord, current
from ..pricing import estimated_cost
from ..sampling import NATIVE, to_sampling_params
from ..served_model import ServedModel, first_output
from ..streaming import EventStream
from .schema import GeneratedText, InferenceRequest, InferenceResponse, InferenceStatus
from .webhooks import WebhookSender

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

    async def create(self, req: InferenceRequest) -> InferenceResponse | EventStream:
        if req.stream and req.num_responses > 1:
            raise APIError(422, "num_responses: must be 1 when streaming", param="num_responses")
        if req.stream and req.webhook is not None:
            raise APIError(422, "webhook: not allowed with stream", param="webhook")
        started = time.monotonic()
        record = current()
        if record.capture_content:
            record.content = {"input": req.input}
        prompt = await self.model.text_prompt(req.input)
        prompt_tokens = len(prompt["prompt_token_ids"])
        # The native API takes no seed but reports one: draw it here so that it is the seed
        # the engine actually used.
        seed = secrets.randbits(64)
        params = to_sampling_params(
            req.sampling_options(seed),
            self.card,
            prompt_tokens=prompt_tokens,
            streaming=req.stream,
            max_tokens_null="max_new_tokens" in req.model_fields_set and req.max_new_tokens is None,
            logprobs=0 if req.stream else None,
            profile=NATIVE,
        )
        request_id = record.request_id
        outputs = self.model.generate(prompt, params, request_id)
        if req.webhook is not None:
            record.usage(prompt_tokens, 0, 0.0, "queued")
            self.webhooks.submit(
                self._deliver(str(req.webhook), request_id, outputs, prompt_tokens, started)
            )
            return InferenceResponse(
                request_id=request_id,
                inference_status=InferenceStatus(status="queued", tokens_input=prompt_tokens),
                num_input_tokens=prompt_tokens,
            )
        first = await first_output(outputs)
        if req.stream:
            events = self._stream(first, outputs, prompt_tokens, seed, record)
            return EventStream(events)
        response = self._response(request_id, first, prompt_tokens, started)
        status = response.inference_status
        record.usage(
            prompt_tokens, status.tokens_generated, status.cost, tgi_finish_reason(first.outputs[0])
        )
        if record.capture_content:
            record.content = {
                **(record.content or {}),
                "output": [r.generated_text for r in response.results],
            }
        return response

    def _response(
        self, request_id: str, out: Any, prompt_tokens: int, started: float
    ) -> InferenceResponse:
        # Token counts include the end-of-sequence token, as DeepInfra's "Hi!" example does.
        generated = sum(len(o.token_ids) for o in out.outputs)
        return InferenceResponse(
            request_id=request_id,
            inference_status=InferenceStatus(
                status="succeeded",
                runtime_ms=round((time.monotonic() - started) * 1000),
                cost=estimated_cost(self.card.pricing, prompt_tokens, generated),
                tokens_generated=generated,
                tokens_input=prompt_tokens,
            ),
            results=[
                GeneratedText(generated_text=o.text)
                for o in sorted(out.outputs, key=lambda o: o.index)
            ],
            num_tokens=generated,
            num_input_tokens=prompt_tokens,
        )

    async def _deliver(
        self,
        url: str,
        request_id: str,
        outputs: AsyncIterator[Any],
        prompt_tokens: int,
        started: float,
    ) -> None:
        try:
            # Not streaming: the engine yields once, when the generation is complete.
            out = await first_output(outputs)
            response = self._response(request_id, out, prompt_tokens, started)
            # The HTTP request was counted when it was queued; its tokens and cost are billed
            # here, when they are known.
            status = response.inference_status
            metrics.PROMPT_TOKENS.labels(self.card.name, "inference").inc(prompt_tokens)
            metrics.GENERATION_TOKENS.labels(self.card.name, "inference").inc(
                status.tokens_generated
            )
            metrics.COST.labels(self.card.name, "inference").inc(status.cost)
        except Exception:
            log.exception("inference %s for a webhook failed", request_id)
            response = InferenceResponse(
                request_id=request_id,
                inference_status=InferenceStatus(
                    status="failed",
                    runtime_ms=round((time.monotonic() - started) * 1000),
                    tokens_input=prompt_tokens,
                ),
                num_input_tokens=prompt_tokens,
            )
        await self.webhooks.deliver(url, response.model_dump_json().encode())

    async def _stream(
        self,
        first: Any,
        rest: AsyncIterator[Any],
        prompt_tokens: int,
        seed: int,
        record: RequestRecord,
    ) -> AsyncIterator[bytes]:
        """One event per token with its real id and logprob; the last one also carries the
        whole text and the details, as TGI's generate_stream does."""
        special = self.model.special_tokens
        generated = ""
        count = 0
        record.first_token()
        out: Any = first
        try:
            while out is not None:
                o = out.outputs[0]
                generated += o.text
                ids = o.token_ids
                last = len(ids) - 1 if o.finish_reason is not None else -1
                texts = _token_texts(o, special)
                for i, token_id in enumerate(ids):
                    count += 1
                    event: dict[str, Any] = {
                        "token": {
                            "id": token_id,
                            "text": texts[i],
                            "logprob": max(o.logprobs[i][token_id].logprob, -9999.0),
                            "special": token_id in special,
                        },
                        "generated_text": None,
                        "details": None,
                    }
                    if i == last:
                        event["generated_text"] = generated
                        event["details"] = {
                            "finish_reason": tgi_finish_reason(o),
                            "generated_tokens": count,
                            "input_tokens": prompt_tokens,
                            "seed": seed,
                        }
                    yield b"data: " + orjson.dumps(event) + b"\n\n"
                if o.finish_reason is not None:
                    cost = estimated_cost(self.card.pricing, prompt_tokens, count)
                    record.usage(prompt_tokens, count, cost, tgi_finish_reason(o))
                    if record.capture_content:
                        record.content = {**(record.content or {}), "output": [generated]}
                out = await anext(rest, None)
        finally:
            await rest.aclose()  # on an early close, vLLM aborts the request
