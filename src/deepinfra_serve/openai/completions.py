"""Text completions: a raw prompt (text or token ids) -> engine -> OpenAI's text_completion."""

from __future__ import annotations

import time
from typing import Any

from ..errors import APIError
from ..observability.context import RequestRecord, current
from ..sampling import OPENAI_COMPLETIONS, to_sampling_params
from ..served_model import ServedModel, first_output
from ..streaming import EventStream
from .logprobs import completion_logprobs
from .schema import Completion, CompletionChoice, CompletionRequest
from .serving import UsagePolicy, check_stream_options, finish_reason, sse_chunks, usage

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

    async def create(self, req: CompletionRequest) -> Completion | EventStream:
        _refuse_unsupported(req)
        record = current()
        record.user = req.user
        if record.capture_content:
            record.content = {"prompt": req.prompt}
        prompt = await self.model.text_prompt(req.prompt)
        prompt_ids = prompt["prompt_token_ids"]
        params = to_sampling_params(
            req,
            self.card,
            prompt_tokens=len(prompt_ids),
            streaming=req.stream,
            max_tokens_null="max_tokens" in req.model_fields_set and req.max_tokens is None,
            logprobs=req.logprobs,
            stop_token_ids=req.stop_token_ids,
            profile=OPENAI_COMPLETIONS,
        )
        echo = ""
        if req.echo:
            echo = req.prompt if isinstance(req.prompt, str) else self.model.decode(prompt_ids)
        as_ids = bool(req.return_tokens_as_token_ids)
        request_id = f"cmpl-{record.request_id}"
        outputs = self.model.generate(prompt, params, request_id)
        first = await first_output(outputs)
        if not req.stream:
            return self._complete(request_id, first, len(prompt_ids), echo, as_ids, record)

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
        frames = sse_chunks(
            card=self.card,
            request_id=request_id,
            obj="text_completion",
            first=first,
            rest=outputs,
            prompt_tokens=len(prompt_ids),
            n=params.n,
            policy=UsagePolicy.of(req.stream_options),
            delta=delta,
            finish=_finish,
            record=record,
            preamble=preamble,
        )
        return EventStream(frames)

    def _complete(
        self,
        request_id: str,
        out: Any,
        prompt_tokens: int,
        echo: str,
        as_ids: bool,
        record: RequestRecord,
    ) -> Completion:
        choices = [
            CompletionChoice(
                index=o.index,
                text=echo + o.text,
                finish_reason=finish_reason(o.finish_reason),
                logprobs=completion_logprobs(o.token_ids, o.logprobs, len(echo), as_ids),
            )
            for o in sorted(out.outputs, key=lambda o: o.index)
        ]
        completion_tokens = sum(len(o.token_ids) for o in out.outputs)
        u = usage(self.card, prompt_tokens, completion_tokens)
        record.usage(prompt_tokens, completion_tokens, u.estimated_cost, choices[0].finish_reason)
        if record.capture_content:
            record.content = {**(record.content or {}), "output": [c.text for c in choices]}
        return Completion(
            id=request_id, created=int(time.time()), model=self.card.name, choices=choices, usage=u
        )


def _finish(o: Any) -> dict[str, Any]:
    return {
        "index": o.index,
        "text": "",
        "logprobs": None,
        "finish_reason": finish_reason(o.finish_reason),
    }
