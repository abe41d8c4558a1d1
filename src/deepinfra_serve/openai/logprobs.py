"""Engine logprobs -> OpenAI's two logprobs shapes (chat's `content` list, completions' arrays)."""

from __future__ import annotations

from typing import Any

from ..engine.generation import LOGPROB_FLOOR as _FLOOR


def _token(token_id: int, decoded: str | None, as_ids: bool) -> str:
    return f"token_id:{token_id}" if as_ids else (decoded or "")


def _chat_token(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": max(logprob, _FLOOR), "bytes": list(token.encode())}


def chat_logprobs(
    token_ids: Any, logprobs: list[dict[int, Any]] | None, top: int = 0, as_ids: bool = False
) -> dict[str, Any] | None:
    """Chat's `content` list; `top`: the alternatives asked for per position (`top_logprobs`).
    The engine sends the `top` most likely tokens of each position and the sampled one, which
    is among them or ranks lower."""
    if logprobs is None:
        return None
    content = []
    for token_id, entry in zip(token_ids, logprobs, strict=False):
        lp = entry[token_id]
        item = _chat_token(_token(token_id, lp.decoded_token, as_ids), lp.logprob)
        alternatives = sorted(
            (
                (alt.rank, tid, alt)
                for tid, alt in entry.items()
                if alt.rank is not None and alt.rank <= top
            ),
            key=lambda r: r[0],
        )
        item["top_logprobs"] = [
            _chat_token(_token(tid, alt.decoded_token, as_ids), alt.logprob)
            for _, tid, alt in alternatives
        ]
        content.append(item)
    return {"content": content}


def completion_logprobs(
    token_ids: Any,
    logprobs: list[dict[int, Any]] | None,
    text_offset: int,
    as_ids: bool = False,
) -> dict[str, Any] | None:
    """Completions' parallel arrays; `text_offset` is where this text starts in the choice."""
    if logprobs is None:
        return None
    tokens: list[str] = []
    token_logprobs: list[float] = []
    top: list[dict[str, float]] = []
    offsets: list[int] = []
    for token_id, entry in zip(token_ids, logprobs, strict=False):
        lp = entry[token_id]
        token = _token(token_id, lp.decoded_token, as_ids)
        tokens.append(token)
        token_logprobs.append(max(lp.logprob, _FLOOR))
        top.append(
            {
                _token(tid, alt.decoded_token, as_ids): max(alt.logprob, _FLOOR)
                for tid, alt in entry.items()
            }
        )
        offsets.append(text_offset)
        text_offset += len(lp.decoded_token or "")
    return {
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": top,
        "text_offset": offsets,
    }
