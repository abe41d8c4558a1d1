"""Server-sent events responses.

The frames are already SSE (`data: <json>\n\n`, built once per token by the API formatters), so
all a response has to do is send them. Starlette's StreamingResponse does that; its watcher for
the client going away (a task group per response) is left out, as every stream passes through
`request_lifetime.guard_stream`, which watches for that itself at less cost. sse-starlette was
used first; measured at 128 concurrent streams on 2 cores, its per-response task group (pings,
shutdown watcher, send lock) cost time to first token against vLLM's own server, and nothing
here needs its extras: the first token is awaited before the headers go out, so a stream is
never idle before it starts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class EventStream(StreamingResponse):
    def __init__(self, frames: AsyncIterator[bytes]) -> None:
        super().__init__(frames, media_type="text/event-stream", headers=_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.stream_response(send)
