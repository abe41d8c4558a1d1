"""Request bodies sent with `Content-Encoding: gzip`, which DeepInfra accepts on every POST.

The body is inflated whole after it arrives, at most the body bound and one byte more: a small
body that inflates past the bound (a gzip bomb) is a 413 having cost that much memory and no
more; a body that is not gzip, or is cut short, is a 400; another encoding is a 415.
"""

from __future__ import annotations

import zlib

from ..engine.errors import APIError

_GZIP = 16 + zlib.MAX_WBITS  # a gzip header and trailer around the deflate stream


class TooLarge(Exception):
    """The inflated body passes the bound."""


def decoded(body: bytes, encoding: bytes, limit: int) -> bytes:
    """`body` as sent under `encoding` (a Content-Encoding header's value), inflated."""
    name = encoding.decode("latin-1").strip().lower()
    if name in ("", "identity"):
        return body
    if name not in ("gzip", "x-gzip"):
        raise APIError(
            415,
            f"Content-Encoding {name!r} is not supported; send gzip or no encoding",
            code="unsupported_encoding",
        )
    out = bytearray()
    rest = body
    try:
        while rest:  # gzip members may follow each other
            inflate = zlib.decompressobj(_GZIP)
            out += inflate.decompress(rest, limit + 1 - len(out))
            if len(out) > limit or inflate.unconsumed_tail:
                raise TooLarge
            if not inflate.eof:
                raise APIError(400, "Request body is gzip cut short", code="invalid_encoding")
            rest = inflate.unused_data
    except zlib.error as exc:
        raise APIError(400, "Request body is not valid gzip", code="invalid_encoding") from exc
    return bytes(out)
