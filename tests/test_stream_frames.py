"""A chat stream's content deltas are written by splicing the text into the choice's JSON; the
bytes must be exactly what serialising the choice whole gives."""

from __future__ import annotations

import json
import re

import orjson
import pytest
from vllm.outputs import CompletionOutput

from deepinfra_serve.observability.record import new_request_id
from deepinfra_serve.openai.chat import _delta

TEXTS = [" Paris", 'say "hi"\\', "line\nbreak\ttab\x00\x1f", "\u2028\u0085é😀", "</script>"]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("index", [0, 3])
def test_a_spliced_content_delta_is_the_choice_serialised(text: str, index: int) -> None:
    o = CompletionOutput(index, text, [7], None, None, None)
    whole = {
        "index": index,
        "delta": {"role": "assistant", "content": text},
        "finish_reason": None,
        "logprobs": None,
    }
    assert _delta(o) == orjson.dumps(whole)
    assert json.loads(_delta(o)) == whole  # type: ignore[arg-type]


def test_an_empty_delta_sends_nothing() -> None:
    assert _delta(CompletionOutput(0, "", [7], None, None, None)) is None


def test_request_ids_are_24_letters_and_digits_all_used_alike() -> None:
    ids = [new_request_id() for _ in range(4000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch("[A-Za-z0-9]{24}", i) for i in ids)
    counts = {c: 0 for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"}
    for i in ids:
        for c in i:
            counts[c] += 1
    expected = 4000 * 24 / 62  # 1548; a fair draw stays within a few percent of it
    assert all(abs(n - expected) < 0.15 * expected for n in counts.values()), counts
