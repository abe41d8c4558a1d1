"""The HTTP floor: the least a streaming chat server over `AsyncLLM` can do under uvicorn.

One raw ASGI callable, no framework: it reads the body, renders and tokenizes the prompt as
this service does, runs the engine and writes one OpenAI-shaped chunk per token, then usage and
`[DONE]`. Nothing else: no validation, keys, admission, deadline, disconnect watch, metrics or
access log. `vs_vllm --bare` measures it beside the servers, so that each run shows how much of
a server's CPU per token is the HTTP stack and the engine client (this arm) and how much is the
server's own work (the rest). A reference arm for the benchmark, not something to serve.

    python -m benchmarks.bare_asgi --card model_cards/dev/tiny-random.yaml --port 18314
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import uvicorn

from deepinfra_serve.config.cards import load_card
from deepinfra_serve.engine.engine_args import build_engine_args, plan_engine
from deepinfra_serve.engine.served_model import ServedModel
from deepinfra_serve.engine.weights import prepare_weights

Scope = dict[str, Any]
HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class BareServer:
    def __init__(self, card_path: Path, cache_dir: Path) -> None:
        self.card = load_card(card_path)
        self.plan = plan_engine(self.card, prepare_weights(self.card, cache_dir), "cpu")
        self.model: ServedModel | None = None
        self.ids = itertools.count()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["path"] == "/health":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})
        else:
            await self.chat(receive, send)

    async def lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                engine = ServedModel.own_engine(build_engine_args(self.plan))
                self.model = await asyncio.to_thread(ServedModel.start, self.card, engine)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.model is not None:
                    self.model.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def chat(self, receive: Any, send: Any) -> None:
        from vllm.sampling_params import RequestOutputKind, SamplingParams

        assert self.model is not None
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        req = orjson.loads(body)
        prompt = await self.model.prompts.chat(req["messages"])
        params = SamplingParams(
            max_tokens=req["max_tokens"],
            temperature=req["temperature"],
            seed=req["seed"],
            output_kind=RequestOutputKind.DELTA,
            skip_clone=True,
        )
        request_id = f"chatcmpl-{next(self.ids)}"
        outputs = self.model.generate(prompt, params, request_id)
        out = await anext(outputs)  # the first token before the headers, as both servers do
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        envelope = {"id": request_id, "object": "chat.completion.chunk"}
        envelope |= {"created": int(time.time()), "model": self.card.name}
        prefix = b"data: " + orjson.dumps(envelope)[:-1] + b',"choices":['
        tokens = 0
        while out is not None:
            o = out.outputs[0]
            tokens += len(o.token_ids)
            choice = {
                "index": 0,
                "delta": {"role": "assistant", "content": o.text},
                "finish_reason": o.finish_reason,
            }
            frame = prefix + orjson.dumps(choice) + b"]}\n\n"
            await send({"type": "http.response.body", "body": frame, "more_body": True})
            out = await anext(outputs, None)
        usage = {"prompt_tokens": len(prompt["prompt_token_ids"]), "completion_tokens": tokens}
        tail = prefix + b'],"usage":' + orjson.dumps(usage) + b"}\n\ndata: [DONE]\n\n"
        await send({"type": "http.response.body", "body": tail, "more_body": False})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--card", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--cache-dir", type=Path, default=Path.home() / ".cache" / "deepinfra-serve"
    )
    args = parser.parse_args(argv)
    app = BareServer(args.card, args.cache_dir)
    uvicorn.run(app, host="127.0.0.1", port=args.port, access_log=False, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
