"""Text completions: a raw prompt (text or token ids) -> engine -> OpenAI's text_completion."""

from __future__ import annotations

import time
from typing import Any

from ..engine.errors import APIError
from ..engine.generation import Generation, Stream
from ..engine.sampling import to_sampling_params
from ..engine.served_model import ServedModel
from ..observability.record import RequestRecord
from .chunks import UsagePolicy, check_stream_options, plain_finish, sse_chunks
from .logprobs import completion_logprobs
from .responses import Completion, CompletionChoice
from .schema import CompletionRequest

# vLLM's default max_logprobs: the most alternatives one position may report.
MAX_LOGPROBS = 20


def _refuse_unsupported(req: CompletionRequest) -> None:
    if req.logprobs is not None and not 0 <= req.logprobs <= MAX_LOGPROBS:
        raise APIError(
            422,
            f"logprobs: must be between 0 and {MAX_LOGPROBS}, got {req.logprobs}",
            param="logprobs",
        )
    if req.echo and req.logprobs is not None:
        raise APIError(
            422,
            "echo: log-probabilities of the echoed prompt are not supported; drop echo or logprobs",
            param="echo",
        )
    if req.data is not None:
        raise APIError(422, "data: this model takes text only", param="data")
    check_stream_options(req.stream, req.stream_options)


class CompletionService:
    def __init__(self, model: ServedModel) -> None:
        self.model = model
        self.card = model.card

    async def create(self, req: CompletionRequest, record: RequestRecord) -> Completion | Stream:
        _refuse_unsupported(req)
        record.user = req.user
        record.capture("prompt", req.prompt)
        prompt = await self.model.prompts.text(req.prompt)
        prompt_ids = prompt["prompt_token_ids"]
        params = to_sampling_params(
            req.sampling(),
            self.card,
            prompt_tokens=len(prompt_ids),
            profile=req.profile,
        )
        echo = ""
        if req.echo:
            echo = (
                req.prompt if isinstance(req.prompt, str) else self.model.prompts.decode(prompt_ids)
            )
        as_ids = bool(req.return_tokens_as_token_ids)
        request_id = f"cmpl-{record.request_id}"
        gen = Generation(self.model, prompt, params, request_id, record, finish=plain_finish)
        await gen.start()
        if not req.stream:
            return await self._complete(request_id, gen, echo, as_ids)

        offsets = [len(echo)] * params.n

        def delta(o: Any) -> dict[str, Any] | None:
            if not o.text and o.logprobs is None:
                return None
            lp = completion_logprobs(o.token_ids, o.logprobs, offsets[o.index], as_ids)
            offsets[o.index] += len(o.text)
            return {"index": o.index, "text": o.text, "logprobs": lp, "finish_reason": None}

        preamble = [
            {"index": i, "text": echo, "logprobs": None, "finish_reason": None}
            for i in range(params.n)
            if echo
        ]
        return sse_chunks(
            gen=gen,
            model=gen.name,
            request_id=request_id,
            obj="text_completion",
            policy=UsagePolicy.of(req.stream_options),
            delta=delta,
            finish=_finish,
            preamble=preamble,
        )

    async def _complete(
        self, request_id: str, gen: Generation, echo: str, as_ids: bool
    ) -> Completion:
        choices = [
            CompletionChoice(
                index=o.index,
                text=echo + o.text,
                finish_reason=gen.finish_reason(o),
                logprobs=completion_logprobs(o.token_ids, o.logprobs, len(echo), as_ids),
            )
            for o in await gen.final()
        ]
        return Completion(
            id=request_id,
            created=int(time.time()),
            model=gen.name,
            service_tier=gen.tier,
            choices=choices,
            usage=gen.usage(),
        )


def _finish(index: int, reason: str) -> dict[str, Any]:
    return {"index": index, "text": "", "logprobs": None, "finish_reason": reason}
