"""Requests run with no HTTP connection (`Runner.run`, what a webhook job or a batch line
calls): a chat body and a native body on the real CPU engine, in this process, each billed,
metered and logged as an HTTP request is; and a route's errors as values, not exceptions."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from fastapi import FastAPI
from prometheus_client import REGISTRY

from deepinfra_serve.config.cards import ModelCard
from deepinfra_serve.config.settings import ServerSettings
from deepinfra_serve.engine.engine_args import build_engine_args, plan_engine
from deepinfra_serve.engine.lifecycle import Phase
from deepinfra_serve.engine.served_model import ServedModel
from deepinfra_serve.engine.weights import prepare_weights
from deepinfra_serve.http.app import create_app
from deepinfra_serve.http.route_table import Route
from deepinfra_serve.http.routes import ROUTES
from deepinfra_serve.http.runner import Admission, Runner
from deepinfra_serve.native.schema import InferenceRequest, InferenceResponse
from deepinfra_serve.observability.logs import ACCESS_LOGGER, access_log
from deepinfra_serve.openai.responses import ChatCompletion
from deepinfra_serve.openai.schema import ChatCompletionRequest

from ..helpers import HELLO, MODEL

CHAT_ROUTE, NATIVE_ROUTE = (next(r for r in ROUTES if r.label == n) for n in ("chat", "inference"))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def app(tiny_card: ModelCard, cache_dir: Path) -> AsyncIterator[FastAPI]:
    """The app with its engine, in this process: its lifespan runs, no HTTP server does."""

    def start() -> ServedModel:
        weights = prepare_weights(tiny_card, cache_dir)
        args = build_engine_args(plan_engine(tiny_card, weights, "cpu", cpu_kv_cache_gib=1))
        return ServedModel.start(tiny_card, ServedModel.own_engine(args))

    app = create_app(tiny_card, start, ServerSettings())
    async with app.router.lifespan_context(app):
        lifecycle = app.state.lifecycle
        for _ in range(1200):
            if lifecycle.phase is Phase.READY:
                break
            assert lifecycle.phase is Phase.LOADING, lifecycle.phase
            await asyncio.sleep(0.1)
        yield app


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _counts(api: str) -> tuple[float, float, float]:
    """(requests answered 200 at their budget, tokens generated, dollars) billed to `api`."""
    labels = {"model": MODEL, "api": api}
    return (
        _sample("deepinfra_requests_total", **labels, status="200", finish_reason="length"),
        _sample("deepinfra_generation_tokens_total", **labels),
        _sample("deepinfra_estimated_cost_usd_total", **labels),
    )


@pytest.fixture
def access_lines(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> Callable[[], list[dict[str, Any]]]:
    """The access lines written from here on, as the server's handler writes them (a test
    before may have configured the service's logging, which then bypasses pytest's capture)."""
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    written = io.StringIO()
    monkeypatch.setattr(access_log, "handler", logging.StreamHandler(written))
    return lambda: [json.loads(line) for line in written.getvalue().splitlines()]


async def _run(runner: Runner, route: Route, body: Any, **params: str) -> Any:
    record = runner.record(route, via="test", params=params)
    return await runner.run(route, body, record, params=params, admission=Admission.WAIT)


async def test_a_chat_and_a_native_body_run_without_a_connection_billed_metered_and_logged(
    app: FastAPI, access_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    runner: Runner = app.state.runner
    before = {api: _counts(api) for api in ("chat", "inference")}
    chat = ChatCompletionRequest.model_validate(
        {"model": MODEL, "messages": HELLO, "max_tokens": 4, "temperature": 0}
    )
    native = InferenceRequest.model_validate({"input": "Hello", "max_new_tokens": 3})
    chatted = await _run(runner, CHAT_ROUTE, chat)
    inferred = await _run(runner, NATIVE_ROUTE, native, model=MODEL)

    assert chatted.status == 200 and chatted.error is None
    assert isinstance(chatted.answer, ChatCompletion) and chatted.answer.model == MODEL
    assert chatted.usage.completion_tokens == 4 == chatted.answer.usage.completion_tokens
    assert chatted.usage.estimated_cost > 0
    assert inferred.status == 200 and isinstance(inferred.answer, InferenceResponse)
    assert inferred.usage.completion_tokens == 3 == inferred.answer.num_tokens
    assert inferred.answer.request_id == inferred.record.request_id

    for api, outcome in (("chat", chatted), ("inference", inferred)):
        requests, tokens, cost = before[api]
        usage = outcome.usage
        assert _counts(api) == (
            requests + 1,
            tokens + usage.completion_tokens,
            pytest.approx(cost + usage.estimated_cost),
        )
    lines = {line["api"]: line for line in access_lines()}
    assert lines["chat"]["request_id"] == chatted.record.request_id
    assert lines["chat"]["via"] == "test" and lines["chat"]["status"] == 200
    assert lines["chat"]["path"] == "/v1/openai/chat/completions"
    assert lines["chat"]["completion_tokens"] == 4
    assert lines["chat"]["estimated_cost"] == chatted.usage.estimated_cost
    assert lines["inference"]["path"] == f"/v1/inference/{MODEL}"
    assert lines["inference"]["completion_tokens"] == 3


async def test_a_request_the_route_refuses_is_an_outcome_with_the_apis_error(
    app: FastAPI, access_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    runner: Runner = app.state.runner
    other = ChatCompletionRequest.model_validate({"model": "Owner/Other", "messages": HELLO})
    missing = await _run(runner, CHAT_ROUTE, other)
    assert missing.status == 404 and missing.error is not None and missing.answer is None
    assert missing.error.code == "model_not_found"
    too_long = InferenceRequest.model_validate({"input": "Hello " * 5000})
    refused = await _run(runner, NATIVE_ROUTE, too_long, model=MODEL)
    assert refused.status == 400 and refused.error is not None
    assert [line["status"] for line in access_lines()] == [404, 400]


async def test_a_stream_asked_without_a_connection_comes_back_as_its_frames(app: FastAPI) -> None:
    runner: Runner = app.state.runner
    body = ChatCompletionRequest.model_validate(
        {"model": MODEL, "messages": HELLO, "max_tokens": 3, "stream": True}
    )
    outcome = await _run(runner, CHAT_ROUTE, body)
    assert outcome.status == 200 and isinstance(outcome.answer, bytes)
    assert outcome.answer.endswith(b"data: [DONE]\n\n")
    assert outcome.usage.completion_tokens == 3
