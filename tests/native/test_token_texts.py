"""Splitting one engine step's text among its tokens (pure function, plain data)."""

from __future__ import annotations

from types import SimpleNamespace as NS

from deepinfra_serve.native.service import _token_texts, tgi_finish_reason

SPECIAL = {2: "</s>"}


def step(ids: list[int], text: str, decoded: list[str]) -> NS:
    logprobs = [{i: NS(decoded_token=d, logprob=-0.1)} for i, d in zip(ids, decoded, strict=True)]
    return NS(token_ids=ids, text=text, logprobs=logprobs)


def test_one_token_takes_the_step_text() -> None:
    assert _token_texts(step([7], " Hi", [" Hi"]), SPECIAL) == [" Hi"]


def test_special_token_shows_its_own_text() -> None:
    assert _token_texts(step([2], "", [""]), SPECIAL) == ["</s>"]
    assert _token_texts(step([5, 2], "!", ["!", ""]), SPECIAL) == ["!", "</s>"]


def test_several_tokens_split_by_their_decodings() -> None:
    assert _token_texts(step([7, 8, 9], " Hi there!", [" Hi", " there", "!"]), SPECIAL) == [
        " Hi",
        " there",
        "!",
    ]


def test_multibyte_character_goes_to_the_token_that_completes_it() -> None:
    # "é" split over two byte tokens: the first decodes to nothing on its own.
    assert _token_texts(step([40, 41], "é", ["", "é"]), SPECIAL) == ["", "é"]


def test_trimmed_stop_sequence_leaves_the_texts_joining_to_the_delta() -> None:
    texts = _token_texts(step([7, 8], " Hi", [" Hi", "###"]), SPECIAL)
    assert "".join(texts) == " Hi"


def test_tgi_finish_reasons() -> None:
    assert tgi_finish_reason(NS(finish_reason="length", stop_reason=None)) == "length"
    assert tgi_finish_reason(NS(finish_reason="stop", stop_reason=None)) == "eos_token"
    assert tgi_finish_reason(NS(finish_reason="stop", stop_reason="###")) == "stop_sequence"
    assert tgi_finish_reason(NS(finish_reason="stop", stop_reason=13)) == "stop_sequence"
