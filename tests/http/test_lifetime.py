"""How a stream's bytes reach the server: one body message per engine step, the last frames
together with the end of the body, and the engine's stream run to its own end (closing it
early would make vLLM abort a request that had finished).

The engine is a test double here (`StandInEngine`): the messages handed to the server are what
is checked, and the real engine's streams are tested end to end in the API tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from vllm.outputs import CompletionOutput, RequestOutput

from deepinfra_serve.config.cards import ModelCard
from deepinfra_serve.engine.generation import Generation, Raw
from deepinfra_serve.http.families import OPENAI, served_as
from deepinfra_serve.http.lifetime import serve_request
from deepinfra_serve.observability.record import RequestRecord, bind, unbind
from deepinfra_serve.openai.chat import _delta, _finish
from deepinfra_serve.openai.chunks import UsagePolicy, plain_finish, sse_chunks


class StandInEngine:
    """A test double for `ServedModel.generate`: a few outputs, then the end of the stream."""

    def __init__(self, card: ModelCard, texts: list[str]) -> None:
        self.card = card
        self.texts = texts
        self.ran_to_end = False

    async def generate(
        self,
        prompt: Any,
        params: Any,
        request_id: str,
        priority: int = 0,
        adapter: Any = None,
        trace_headers: Any = None,
    ) -> AsyncIterator[Any]:
        for i, text in enumerate(self.texts):
            await asyncio.sleep(0)
            last = i == len(self.texts) - 1
            o = CompletionOutput(0, text, [i], None, None, finish_reason="length" if last else None)
            yield RequestOutput(request_id, None, [1, 2], None, [o], last)
        self.ran_to_end = True


class Params:
    n = 1


async def test_the_last_frames_go_out_with_the_end_of_the_body(tiny_card: ModelCard) -> None:
    engine = StandInEngine(tiny_card, ["Hel", "lo", "!"])
    served = served_as(tiny_card, tiny_card.name, OPENAI)
    record = RequestRecord("rid", tiny_card.name, served=served)
    token = bind(record, {})

    async def work() -> Any:
        gen = Generation(
            engine,
            {"prompt_token_ids": [1, 2]},
            Params(),
            "chatcmpl-rid",
            record,
            finish=plain_finish,
        )
        await gen.start()
        return sse_chunks(
            gen=gen,
            model=tiny_card.name,
            request_id="chatcmpl-rid",
            obj="chat.completion.chunk",
            policy=UsagePolicy.of(None),
            delta=_delta,
            finish=_finish,
        )

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the client stays
        return {"type": "http.disconnect"}

    try:
        await serve_request(receive, send, work, record=record, timeout_s=60, family=OPENAI)
    finally:
        unbind(token)
    start, *bodies = sent
    assert start["type"] == "http.response.start" and start["status"] == 200
    assert [m["more_body"] for m in bodies] == [True, True, False]
    assert all(m["body"] for m in bodies)  # no message for the terminator alone
    frames = [f for m in bodies for f in m["body"].decode().split("\n\n") if f]
    assert frames[-1] == "data: [DONE]"
    chunks = [orjson.loads(f.removeprefix("data: ")) for f in frames[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Hello!"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    assert engine.ran_to_end and record.usage.completion_tokens == 3


async def test_a_raw_answer_goes_out_with_its_media_type_chunk_by_chunk() -> None:
    record = RequestRecord("rid", "m")

    async def chunks() -> AsyncIterator[bytes]:
        for line in (b'{"id": 1}\n', b'{"id": 2}\n'):
            await asyncio.sleep(0)
            yield line

    async def work() -> Any:
        return Raw("application/jsonl", chunks())

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    await serve_request(receive, send, work, record=record, timeout_s=60, family=OPENAI)
    start, *bodies = sent
    assert start["status"] == 200 == record.status
    assert (b"content-type", b"application/jsonl") in start["headers"]
    assert (b"x-request-id", b"rid") in start["headers"]
    assert [(m["body"], m["more_body"]) for m in bodies] == [
        (b'{"id": 1}\n', True),
        (b'{"id": 2}\n', True),
        (b"", False),
    ]
