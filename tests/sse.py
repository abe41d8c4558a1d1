"""Reading SSE bodies as the spec splits them: at LF only.

httpx's `iter_lines` also splits at U+2028, U+0085 and the like, which generated text (and so
a JSON string in an event) can hold.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator

import httpx


def _split(chunks: Iterable[bytes]) -> Iterator[str]:
    rest = b""
    for chunk in chunks:
        *lines, rest = (rest + chunk).split(b"\n")
        yield from (line.rstrip(b"\r").decode() for line in lines)
    if rest:
        yield rest.decode()


def sse_lines(r: httpx.Response) -> Iterator[str]:
    """The body's lines, as they arrive."""
    return _split(r.iter_bytes())


async def asse_lines(r: httpx.Response) -> AsyncIterator[str]:
    rest = b""
    async for chunk in r.aiter_bytes():
        *lines, rest = (rest + chunk).split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r").decode()
    if rest:
        yield rest.decode()
