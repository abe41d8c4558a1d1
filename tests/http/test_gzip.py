"""Request bodies sent gzip-compressed (DeepInfra accepts them on every POST): served, and
bounded by the body limit once inflated, on the session server's real engine."""

from __future__ import annotations

import gzip
import zlib

import httpx
import orjson

from ..helpers import CHAT, HELLO, MODEL, metric_sum

GZIP = {"content-encoding": "gzip", "content-type": "application/json"}


def _rss(client: httpx.Client) -> float:
    return metric_sum(client.get("/metrics").text, "process_resident_memory_bytes")


def _bomb(inflated: int) -> bytes:
    """A valid gzip body of `inflated` zero bytes (about a thousandth of that, compressed)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1 << 20)
    return b"".join(deflate.compress(chunk) for _ in range(inflated >> 20)) + deflate.flush()


def test_a_gzip_body_is_served(client: httpx.Client) -> None:
    body = gzip.compress(orjson.dumps({"model": MODEL, "messages": HELLO, "max_tokens": 2}))
    r = client.post(CHAT, content=body, headers=GZIP)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
    native = gzip.compress(orjson.dumps({"input": "Hi", "max_new_tokens": 2}))
    assert client.post(f"/v1/inference/{MODEL}", content=native, headers=GZIP).status_code == 200


def test_a_gzip_bomb_is_413_and_costs_no_memory(client: httpx.Client) -> None:
    bomb = _bomb(256 << 20)  # 256 MiB inflated, past the 8 MiB bound
    assert len(bomb) < 1 << 20
    before = _rss(client)
    r = client.post(CHAT, content=bomb, headers=GZIP)
    after = _rss(client)
    assert r.status_code == 413
    assert r.json()["error"]["message"] == "Request body (inflated) is larger than 8388608 bytes"
    print(f"server RSS {before / 2**20:.0f} MiB before, {after / 2**20:.0f} MiB after")
    assert after - before < 32 << 20


def test_a_body_that_is_not_gzip_is_400_and_another_encoding_415(client: httpx.Client) -> None:
    plain = orjson.dumps({"model": MODEL, "messages": HELLO, "max_tokens": 2})
    broken = client.post(CHAT, content=plain, headers=GZIP)
    assert broken.status_code == 400
    assert broken.json()["error"]["message"] == "Request body is not valid gzip"
    cut = client.post(CHAT, content=gzip.compress(plain)[:-12], headers=GZIP)
    assert cut.status_code == 400
    brotli = client.post(CHAT, content=plain, headers={**GZIP, "content-encoding": "br"})
    assert brotli.status_code == 415
    assert brotli.json()["error"]["code"] == "unsupported_encoding"
